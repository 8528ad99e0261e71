package provider

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/heraldlb/herald/provider/service"
)

const conditionType = "test.herald.dev/Ready"

// fakeBackend records calls and answers with canned results.
type fakeBackend struct {
	ensureErr error
	ensured   []string
	deleted   []string
}

func (f *fakeBackend) Start(context.Context, Env) error { return nil }
func (f *fakeBackend) Ensure(_ context.Context, lb *service.LoadBalancer) (*v1.LoadBalancerStatus, error) {
	f.ensured = append(f.ensured, lb.Key())
	if f.ensureErr != nil {
		return nil, f.ensureErr
	}
	return &v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{{IP: "192.0.2.1"}}}, nil
}
func (f *fakeBackend) UpdateNodes(context.Context, *service.LoadBalancer) error { return nil }
func (f *fakeBackend) Get(context.Context, service.Ref) (*v1.LoadBalancerStatus, bool, error) {
	return nil, false, nil
}
func (f *fakeBackend) Delete(_ context.Context, ref service.Ref) error {
	f.deleted = append(f.deleted, ref.Key())
	return nil
}
func (f *fakeBackend) ConditionType() string { return conditionType }

type reasoned struct{ reason string }

func (r reasoned) Error() string  { return "no address for you" }
func (r reasoned) Reason() string { return r.reason }

type fixture struct {
	provider *Provider
	backend  *fakeBackend
	client   *fake.Clientset
	recorder *record.FakeRecorder
}

func newFixture(t *testing.T, svc *v1.Service) *fixture {
	t.Helper()
	f := &fixture{backend: &fakeBackend{}, client: fake.NewClientset(svc), recorder: record.NewFakeRecorder(10)}
	f.provider = New(f.backend, service.Selection{})
	f.provider.client, f.provider.recorder, f.provider.startErr = f.client, f.recorder, nil
	f.provider.now = func() time.Time { return time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC) }
	return f
}

func (f *fixture) condition(t *testing.T, svc *v1.Service) *metav1.Condition {
	t.Helper()
	got, err := f.client.CoreV1().Services(svc.Namespace).Get(context.Background(), svc.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return meta.FindStatusCondition(got.Status.Conditions, conditionType)
}

func (f *fixture) event() string {
	select {
	case e := <-f.recorder.Events:
		return e
	default:
		return ""
	}
}

func testService(annotations map[string]string) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "svc", UID: "u1", Annotations: annotations, Generation: 3},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, IPFamilies: []v1.IPFamily{v1.IPv4Protocol},
			Ports: []v1.ServicePort{{Protocol: v1.ProtocolTCP, Port: 80}}},
	}
}

func TestEnsureReportsFailures(t *testing.T) {
	tests := []struct {
		name        string
		annotations map[string]string
		backendErr  error
		wantReason  string
		wantEvent   bool
		wantBackend bool
	}{
		{name: "invalid annotation", annotations: map[string]string{service.AnnotationLoadBalancerIPs: "nope"},
			wantReason: ReasonInvalidAnnotation, wantEvent: true},
		{name: "backend error with a reason", backendErr: reasoned{"AllocationFailed"},
			wantReason: "AllocationFailed", wantEvent: true, wantBackend: true},
		{name: "backend error without a reason", backendErr: errors.New("boom"),
			wantReason: ReasonFailed, wantBackend: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := testService(tt.annotations)
			f := newFixture(t, svc)
			f.backend.ensureErr = tt.backendErr
			if _, err := f.provider.EnsureLoadBalancer(context.Background(), "c", svc, nil); err == nil {
				t.Fatal("EnsureLoadBalancer succeeded")
			}
			if called := len(f.backend.ensured) > 0; called != tt.wantBackend {
				t.Errorf("backend called = %v, want %v", called, tt.wantBackend)
			}
			event := f.event()
			if gotEvent := event != ""; gotEvent != tt.wantEvent || tt.wantEvent && !strings.HasPrefix(event, "Warning "+tt.wantReason) {
				t.Errorf("event = %q, want Warning %s: %v", event, tt.wantReason, tt.wantEvent)
			}
			c := f.condition(t, svc)
			if c == nil || c.Status != metav1.ConditionFalse || c.Reason != tt.wantReason || c.ObservedGeneration != 3 {
				t.Errorf("condition = %+v, want False/%s at generation 3", c, tt.wantReason)
			}
		})
	}
}

func TestEnsureWritesConditionOnlyOnChange(t *testing.T) {
	svc := testService(nil)
	f := newFixture(t, svc)
	status, err := f.provider.EnsureLoadBalancer(context.Background(), "c", svc, nil)
	if err != nil || status.Ingress[0].IP != "192.0.2.1" {
		t.Fatalf("EnsureLoadBalancer = %v, %v", status, err)
	}
	c := f.condition(t, svc)
	if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "192.0.2.1") {
		t.Fatalf("condition = %+v, want True naming the address", c)
	}
	// A second sync of the same Service (as after a CCM restart) writes nothing.
	current, _ := f.client.CoreV1().Services("ns").Get(context.Background(), "svc", metav1.GetOptions{})
	f.client.ClearActions()
	if _, err := f.provider.EnsureLoadBalancer(context.Background(), "c", current, nil); err != nil {
		t.Fatal(err)
	}
	if actions := f.client.Actions(); len(actions) != 0 {
		t.Errorf("unchanged sync made API calls: %v", actions)
	}
}

func TestDeleteClearsCondition(t *testing.T) {
	svc := testService(nil)
	f := newFixture(t, svc)
	if _, err := f.provider.EnsureLoadBalancer(context.Background(), "c", svc, nil); err != nil {
		t.Fatal(err)
	}
	current, _ := f.client.CoreV1().Services("ns").Get(context.Background(), "svc", metav1.GetOptions{})
	if err := f.provider.EnsureLoadBalancerDeleted(context.Background(), "c", current); err != nil {
		t.Fatal(err)
	}
	if len(f.backend.deleted) != 1 || f.backend.deleted[0] != "ns/svc" {
		t.Errorf("backend deletes = %v", f.backend.deleted)
	}
	if c := f.condition(t, svc); c != nil {
		t.Errorf("condition still there after delete: %+v", c)
	}
}

func TestCallsBeforeStartFail(t *testing.T) {
	p := New(&fakeBackend{}, service.Selection{})
	if _, err := p.EnsureLoadBalancer(context.Background(), "c", testService(nil), nil); !errors.Is(err, ErrNotStarted) {
		t.Errorf("EnsureLoadBalancer before start: %v", err)
	}
	if _, _, err := p.GetLoadBalancer(context.Background(), "c", testService(nil)); !errors.Is(err, ErrNotStarted) {
		t.Errorf("GetLoadBalancer before start: %v", err)
	}
}

// "Not ready yet" (e.g. state not recovered after a restart) is retried
// silently: writing it on the Service would be churn on every restart.
func TestNotReadyIsNotReportedOnTheService(t *testing.T) {
	svc := testService(nil)
	f := newFixture(t, svc)
	f.backend.ensureErr = fmt.Errorf("%w: recovering", ErrNotReady)
	f.client.ClearActions()
	if _, err := f.provider.EnsureLoadBalancer(context.Background(), "c", svc, nil); !errors.Is(err, ErrNotReady) {
		t.Fatalf("EnsureLoadBalancer error = %v, want ErrNotReady", err)
	}
	if e := f.event(); e != "" {
		t.Errorf("event %q recorded", e)
	}
	if actions := f.client.Actions(); len(actions) != 0 {
		t.Errorf("API calls made: %v", actions)
	}
}
