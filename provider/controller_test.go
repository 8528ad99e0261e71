package provider

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	"github.com/heraldlb/herald/provider/service"
)

const (
	conditionType  = "test.herald.dev/Ready"
	poolAnnotation = "test.herald.dev/pool"
)

// fakeBackend records calls and answers with canned results.
type fakeBackend struct {
	ensureErr error
	warning   *Warning
	ensured   []string
	updated   []string
	deleted   []string
}

func (f *fakeBackend) Start(context.Context, Env) error { return nil }
func (f *fakeBackend) Ensure(_ context.Context, lb *service.LoadBalancer) (*Result, error) {
	f.ensured = append(f.ensured, lb.Key())
	if f.ensureErr != nil {
		return nil, f.ensureErr
	}
	return &Result{Status: &v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{{IP: "192.0.2.1"}}},
		Annotations: map[string]string{poolAnnotation: "p"}, Warning: f.warning}, nil
}
func (f *fakeBackend) UpdateNodes(_ context.Context, lb *service.LoadBalancer) error {
	f.updated = append(f.updated, fmt.Sprintf("%s:%d", lb.Key(), len(lb.Nodes())))
	return nil
}
func (f *fakeBackend) Delete(_ context.Context, ref service.Ref) error {
	f.deleted = append(f.deleted, ref.Key())
	return nil
}
func (f *fakeBackend) ConditionType() string    { return conditionType }
func (f *fakeBackend) AnnotationKeys() []string { return []string{poolAnnotation} }

type reasoned struct{ reason, message string }

func (r reasoned) Error() string  { return r.message }
func (r reasoned) Reason() string { return r.reason }

// fixture runs a controller's sync over a fake clientset whose informers
// are fed by hand, so each step is explicit.
type fixture struct {
	controller *ServiceController
	client     *fake.Clientset
	factory    informers.SharedInformerFactory
	backend    *fakeBackend
	recorder   *record.FakeRecorder
	registry   *prometheus.Registry
}

func newFixture(t *testing.T, scope Scope, objects ...*v1.Service) *fixture {
	t.Helper()
	f := &fixture{backend: &fakeBackend{}, recorder: record.NewFakeRecorder(100)}
	f.client = fake.NewClientset()
	for _, o := range objects {
		if err := f.client.Tracker().Add(o); err != nil {
			t.Fatal(err)
		}
	}
	f.registry = prometheus.NewRegistry()
	p, err := New(f.backend, service.Selection{}, f.registry)
	if err != nil {
		t.Fatal(err)
	}
	p.client, p.recorder, p.startErr = f.client, f.recorder, nil
	p.now = func() time.Time { return time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC) }
	f.factory = informers.NewSharedInformerFactory(f.client, 0)
	c, err := NewServiceController(p, f.client, scope, f.factory.Core().V1().Services(), f.factory.Core().V1().Nodes(),
		f.factory.Core().V1().Namespaces())
	if err != nil {
		t.Fatal(err)
	}
	f.controller = c
	return f
}

// step copies the Service's current state into the informer, syncs it and
// returns the Service as stored after the sync, with the sync's error.
func (f *fixture) step(t *testing.T, name string) (*v1.Service, error) {
	t.Helper()
	f.observe(t, name)
	syncErr := f.controller.sync(context.Background(), "ns/"+name)
	after, err := f.client.CoreV1().Services("ns").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return after, syncErr
}

// observe copies the Service's current state into the informer.
func (f *fixture) observe(t *testing.T, name string) {
	t.Helper()
	current, err := f.client.CoreV1().Services("ns").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.factory.Core().V1().Services().Informer().GetIndexer().Update(current); err != nil {
		t.Fatal(err)
	}
}

// failingStep is step for a sync that must fail.
func (f *fixture) failingStep(t *testing.T, name string) *v1.Service {
	t.Helper()
	svc, err := f.step(t, name)
	if err == nil {
		t.Fatal("sync succeeded, want a failure")
	}
	return svc
}

func (f *fixture) mustStep(t *testing.T, name string) *v1.Service {
	t.Helper()
	svc, err := f.step(t, name)
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return svc
}

// events takes the events recorded so far.
func (f *fixture) events() []string {
	out := make([]string, 0, len(f.recorder.Events))
	for len(f.recorder.Events) > 0 {
		out = append(out, <-f.recorder.Events)
	}
	return out
}

func (f *fixture) writes() []k8stesting.Action {
	return slices.DeleteFunc(f.client.Actions(), func(a k8stesting.Action) bool {
		return a.GetVerb() == "get" || a.GetVerb() == "list" || a.GetVerb() == "watch"
	})
}

func testService(class *string, annotations map[string]string) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "svc", UID: "u1", Annotations: annotations, Generation: 3},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, LoadBalancerClass: class,
			IPFamilies: []v1.IPFamily{v1.IPv4Protocol}, Ports: []v1.ServicePort{{Protocol: v1.ProtocolTCP, Port: 80}}},
	}
}

func classed() *string { return new(service.Class) }

func condition(svc *v1.Service) *metav1.Condition {
	return meta.FindStatusCondition(svc.Status.Conditions, conditionType)
}

// A Service gets the finalizer first, then annotations, status and
// condition; a sync with nothing to change writes nothing; a Service that
// stops being a LoadBalancer loses all of it, the finalizer last.
func TestControllerLifecycle(t *testing.T) {
	f := newFixture(t, Classed, testService(classed(), nil))
	got := f.mustStep(t, "svc")
	if !slices.Contains(got.Finalizers, ClassFinalizer) || len(f.backend.ensured) != 0 {
		t.Fatalf("first sync: finalizers %v, ensured %v; want the finalizer before any address", got.Finalizers, f.backend.ensured)
	}
	f.client.ClearActions()
	got = f.mustStep(t, "svc")
	if len(got.Status.LoadBalancer.Ingress) != 1 || got.Status.LoadBalancer.Ingress[0].IP != "192.0.2.1" || got.Annotations[poolAnnotation] != "p" {
		t.Fatalf("second sync: status %+v, annotations %v", got.Status.LoadBalancer, got.Annotations)
	}
	if c := condition(got); c == nil || c.Status != metav1.ConditionTrue || c.Reason != ReasonEnsured || c.ObservedGeneration != 3 ||
		!strings.Contains(c.Message, "192.0.2.1") {
		t.Errorf("condition = %+v, want True/Ensured naming the address at generation 3", c)
	}
	// The annotations first: whoever sees the address sees them.
	if w := f.writes(); len(w) != 2 || w[0].GetSubresource() != "" || w[1].GetSubresource() != "status" {
		t.Errorf("writes = %v, want the annotations, then status and condition in one patch", w)
	}
	f.client.ClearActions()
	f.mustStep(t, "svc")
	if w := f.writes(); len(w) != 0 {
		t.Errorf("an unchanged Service was written: %v", w)
	}

	got.Spec.Type = v1.ServiceTypeClusterIP
	got.Spec.LoadBalancerClass = nil
	if _, err := f.client.CoreV1().Services("ns").Update(context.Background(), got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	got = f.mustStep(t, "svc")
	_, annotated := got.Annotations[poolAnnotation]
	if len(got.Status.LoadBalancer.Ingress) != 0 || len(got.Finalizers) != 0 || condition(got) != nil || annotated ||
		!slices.Equal(f.backend.deleted, []string{"ns/svc"}) {
		t.Fatalf("after type change: status %+v, finalizers %v, annotations %v, deleted %v",
			got.Status, got.Finalizers, got.Annotations, f.backend.deleted)
	}
}

// Each controller serves its scope: Services without a class carry the
// upstream finalizer, which Services served by earlier versions have.
func TestControllersServeTheirScope(t *testing.T) {
	tests := []struct {
		name   string
		scope  Scope
		class  *string
		served bool
	}{
		{name: "classless controller, no class", scope: Classless, served: true},
		{name: "classless controller, herald's class", scope: Classless, class: classed()},
		{name: "classless controller, another class", scope: Classless, class: new("example.com/other")},
		{name: "class controller, herald's class", scope: Classed, class: classed(), served: true},
		{name: "class controller, no class", scope: Classed},
		{name: "class controller, another class", scope: Classed, class: new("example.com/other")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.scope, testService(tt.class, nil))
			f.mustStep(t, "svc")
			got := f.mustStep(t, "svc")
			if !tt.served {
				if w := f.writes(); len(w) != 0 || len(f.backend.ensured) != 0 {
					t.Errorf("wrote %v, ensured %v", w, f.backend.ensured)
				}
				return
			}
			if !slices.Equal(got.Finalizers, []string{tt.scope.finalizer()}) || len(got.Status.LoadBalancer.Ingress) != 1 {
				t.Errorf("finalizers %v, status %+v", got.Finalizers, got.Status.LoadBalancer)
			}
		})
	}
	if Classless.finalizer() != LoadBalancerFinalizer || Classed.finalizer() != ClassFinalizer {
		t.Error("finalizers swapped")
	}
}

// A failure is reported once per distinct failure: a Warning event and a
// False condition; retries of the same failure add nothing. A success
// turns the condition True again.
func TestFailuresAreReportedOncePerDistinctFailure(t *testing.T) {
	f := newFixture(t, Classless, testService(nil, nil))
	f.mustStep(t, "svc")
	f.backend.ensureErr = reasoned{"AllocationFailed", "pool p: no free IPv4 address"}
	for range 3 {
		if _, err := f.step(t, "svc"); err == nil {
			t.Fatal("sync succeeded")
		}
	}
	if events := f.events(); !slices.Equal(events, []string{"Warning AllocationFailed pool p: no free IPv4 address"}) {
		t.Errorf("events = %q, want one Warning", events)
	}
	got := f.failingStep(t, "svc")
	if c := condition(got); c == nil || c.Status != metav1.ConditionFalse || c.Reason != "AllocationFailed" {
		t.Errorf("condition = %+v, want False/AllocationFailed", c)
	}
	f.backend.ensureErr = reasoned{"AllocationFailed", "pool q: unknown"}
	f.failingStep(t, "svc")
	if events := f.events(); len(events) != 1 {
		t.Errorf("a different failure gave events %q, want one", events)
	}
	f.backend.ensureErr = nil
	got = f.mustStep(t, "svc")
	if c := condition(got); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("condition after success = %+v", c)
	}
	f.backend.ensureErr = reasoned{"AllocationFailed", "pool p: no free IPv4 address"}
	f.failingStep(t, "svc")
	if events := f.events(); len(events) != 1 {
		t.Errorf("the first failure again after a success gave events %q, want one", events)
	}
}

// An annotation the user got wrong never reaches the backend.
func TestInvalidAnnotationIsReported(t *testing.T) {
	f := newFixture(t, Classless, testService(nil, map[string]string{service.AnnotationLoadBalancerIPs: "nope"}))
	f.mustStep(t, "svc")
	got, err := f.step(t, "svc")
	if !errors.Is(err, service.ErrInvalidAnnotation) || len(f.backend.ensured) != 0 {
		t.Fatalf("sync: %v, ensured %v", err, f.backend.ensured)
	}
	if events := f.events(); len(events) != 1 || !strings.HasPrefix(events[0], "Warning "+ReasonInvalidAnnotation) {
		t.Errorf("events = %q", events)
	}
	if c := condition(got); c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonInvalidAnnotation {
		t.Errorf("condition = %+v", c)
	}
}

// A load balancer that works with a problem shows True with the problem's
// reason, and one Warning.
func TestWarningIsReportedOnAWorkingLoadBalancer(t *testing.T) {
	f := newFixture(t, Classless, testService(nil, nil))
	f.backend.warning = &Warning{Reason: "AddressOutsidePools", Message: "192.0.2.1 is in no pool"}
	f.mustStep(t, "svc")
	f.mustStep(t, "svc")
	got := f.mustStep(t, "svc")
	if c := condition(got); c == nil || c.Status != metav1.ConditionTrue || c.Reason != "AddressOutsidePools" {
		t.Errorf("condition = %+v", c)
	}
	if events := f.events(); !slices.Equal(events, []string{"Warning AddressOutsidePools 192.0.2.1 is in no pool"}) {
		t.Errorf("events = %q", events)
	}
}

// "Not ready yet" (start-up under way) is retried silently, and a pending
// Service is queued again on RequeuePending.
func TestNotReadyIsNotReportedAndRequeued(t *testing.T) {
	f := newFixture(t, Classless, testService(nil, nil))
	f.mustStep(t, "svc")
	f.backend.ensureErr = fmt.Errorf("%w: recovering", ErrNotReady)
	f.client.ClearActions()
	if _, err := f.step(t, "svc"); !errors.Is(err, ErrNotReady) {
		t.Fatalf("sync error = %v, want ErrNotReady", err)
	}
	if e := f.events(); len(e) != 0 {
		t.Errorf("events %q recorded", e)
	}
	if w := f.writes(); len(w) != 0 {
		t.Errorf("writes %v", w)
	}
	if f.controller.queue.Len() != 0 {
		t.Fatal("the queue is not empty before the requeue")
	}
	requeuer{f.controller.lb}.RequeuePending() // not registered: reaches no one
	f.controller.lb.register(f.controller)
	requeuer{f.controller.lb}.RequeuePending()
	if key, _ := f.controller.queue.Get(); key != "ns/svc" || f.controller.queue.Len() != 0 {
		t.Errorf("queued %q (+%d), want the pending Service", key, f.controller.queue.Len())
	}
}

// A change of the eligible nodes moves every load balancer of the scope;
// an update that changes nothing they use moves none.
func TestNodeChangesUpdateLoadBalancers(t *testing.T) {
	f := newFixture(t, Classless, testService(nil, nil))
	f.mustStep(t, "svc")
	f.mustStep(t, "svc")
	f.observe(t, "svc") // with its address
	nodes := f.factory.Core().V1().Nodes().Informer().GetIndexer()
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "192.0.2.11"}}}}
	if err := nodes.Add(node); err != nil {
		t.Fatal(err)
	}
	if err := f.controller.syncNodes(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f.controller.syncNodes(context.Background()); err != nil {
		t.Fatal(err)
	}
	excluded := node.DeepCopy()
	excluded.Labels = map[string]string{v1.LabelNodeExcludeBalancers: ""}
	if !nodeChanged(node, excluded) || nodeChanged(node, node.DeepCopy()) {
		t.Error("nodeChanged misjudges the exclusion label")
	}
	if err := nodes.Update(excluded); err != nil {
		t.Fatal(err)
	}
	if err := f.controller.syncNodes(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := []string{"ns/svc:1", "ns/svc:0"}; !slices.Equal(f.backend.updated, want) {
		t.Errorf("UpdateNodes calls %v, want %v", f.backend.updated, want)
	}
}

func TestCallsBeforeStartAreNotReady(t *testing.T) {
	p, err := New(&fakeBackend{}, service.Selection{}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.ensure(context.Background(), testService(nil, nil), nil); !errors.Is(err, ErrNotStarted) || !errors.Is(err, ErrNotReady) {
		t.Errorf("ensure before start: %v", err)
	}
	if err := p.remove(context.Background(), testService(nil, nil)); !errors.Is(err, ErrNotStarted) {
		t.Errorf("remove before start: %v", err)
	}
}

// herald_services counts the Services by the outcome of their last sync.
func TestServicesMetricFollowsSyncs(t *testing.T) {
	f := newFixture(t, Classless, testService(nil, nil))
	count := func(state string) float64 {
		return testutil.ToFloat64(f.controller.lb.metrics.services.WithLabelValues(ClasslessControllerName, state))
	}
	f.mustStep(t, "svc")
	f.mustStep(t, "svc")
	if count(stateReady) != 1 || count(statePending) != 0 {
		t.Errorf("after a success: ready %v, pending %v", count(stateReady), count(statePending))
	}
	f.backend.ensureErr = reasoned{"AllocationFailed", "no address"}
	f.failingStep(t, "svc")
	if count(stateReady) != 0 || count(statePending) != 1 {
		t.Errorf("after a failure: ready %v, pending %v", count(stateReady), count(statePending))
	}
	f.controller.gone(testService(nil, nil))
	if count(stateReady) != 0 || count(statePending) != 0 {
		t.Errorf("after the Service went: ready %v, pending %v", count(stateReady), count(statePending))
	}
}

// A relabelled Namespace requeues the pending Services in it, no others.
func TestRelabelledNamespaceRequeuesItsPendingServices(t *testing.T) {
	other := testService(nil, nil)
	other.Namespace = "elsewhere"
	f := newFixture(t, Classless, testService(nil, nil), other)
	f.backend.ensureErr = reasoned{"AllocationFailed", "no pool selects the namespace"}
	f.mustStep(t, "svc")
	f.failingStep(t, "svc")
	f.controller.mu.Lock()
	f.controller.setState("elsewhere/svc", statePending)
	f.controller.mu.Unlock()
	f.controller.requeuePendingIn("ns")
	if key, _ := f.controller.queue.Get(); key != "ns/svc" || f.controller.queue.Len() != 0 {
		t.Errorf("queued %q (+%d), want only the pending Service of ns", key, f.controller.queue.Len())
	}
}
