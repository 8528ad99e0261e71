package baremetal

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/ipam"
	"github.com/heraldlb/herald/provider"
	"github.com/heraldlb/herald/provider/service"
)

type fixture struct {
	backend  *Backend
	recorder *record.FakeRecorder
	registry *prometheus.Registry
	requeues *requeues
}

// newFixture returns a backend over pool 192.0.2.10-192.0.2.12 whose
// informer holds services.
func newFixture(t *testing.T, services ...*v1.Service) *fixture {
	t.Helper()
	pools := []ipam.Pool{{Name: "p", AutoAssign: true,
		Ranges: []ipam.Range{{First: netip.MustParseAddr("192.0.2.10"), Last: netip.MustParseAddr("192.0.2.12")}}}}
	f := &fixture{recorder: record.NewFakeRecorder(100), registry: prometheus.NewRegistry()}
	f.backend = newBackend(t, pools, f.registry)
	f.requeues = start(t, f.backend, provider.Env{
		Services:       serviceLister(t, services...),
		ServicesSynced: func() bool { return true },
		Recorder:       f.recorder,
	})
	return f
}

func newBackend(t *testing.T, pools []ipam.Pool, reg prometheus.Registerer) *Backend {
	t.Helper()
	b, err := New(pools, reg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func serviceLister(t *testing.T, services ...*v1.Service) corelisters.ServiceLister {
	t.Helper()
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, svc := range services {
		if err := indexer.Add(svc); err != nil {
			t.Fatal(err)
		}
	}
	return corelisters.NewServiceLister(indexer)
}

// requeues counts the backend's requests to sync Services again.
type requeues struct{ pending, all atomic.Int32 }

func (r *requeues) RequeuePending() { r.pending.Add(1) }
func (r *requeues) RequeueAll()     { r.all.Add(1) }

// start starts b until the test ends, counting its requeues.
func start(t *testing.T, b *Backend, env provider.Env) *requeues {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r := &requeues{}
	env.Requeue = r
	if err := b.Start(ctx, env); err != nil {
		t.Fatal(err)
	}
	return r
}

// waitServing waits until b's start-up is done.
func waitServing(t *testing.T, b *Backend) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) { return b.ready() == nil, nil })
	if err != nil {
		t.Fatalf("the backend does not serve: %v", b.ready())
	}
}

func (f *fixture) events() []string {
	var out []string
	for {
		select {
		case e := <-f.recorder.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func lbService(name string, age int, ingress ...string) *v1.Service {
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name),
			CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Minute))},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, IPFamilies: []v1.IPFamily{v1.IPv4Protocol},
			Ports: []v1.ServicePort{{Protocol: v1.ProtocolTCP, Port: 80}}},
	}
	for _, ip := range ingress {
		svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
	}
	return svc
}

// ensure waits until b serves and ensures svc.
func ensure(t *testing.T, b *Backend, svc *v1.Service) ([]string, error) {
	t.Helper()
	waitServing(t, b)
	return ensureNow(t, b, svc)
}

// ensureNow ensures svc whether b serves or not.
func ensureNow(t *testing.T, b *Backend, svc *v1.Service) ([]string, error) {
	t.Helper()
	lb, err := service.Build(svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	result, err := b.Ensure(context.Background(), lb)
	if err != nil {
		return nil, err
	}
	var ips []string
	for _, in := range result.Status.Ingress {
		if in.IPMode == nil || *in.IPMode != v1.LoadBalancerIPModeVIP {
			t.Errorf("ingress %s has ipMode %v, want VIP", in.IP, in.IPMode)
		}
		ips = append(ips, in.IP)
	}
	return ips, nil
}

func TestNothingIsAllocatedBeforeTheInformerSynced(t *testing.T) {
	pools := []ipam.Pool{{Name: "p", AutoAssign: true,
		Ranges: []ipam.Range{{First: netip.MustParseAddr("192.0.2.10"), Last: netip.MustParseAddr("192.0.2.12")}}}}
	var synced atomic.Bool
	b := newBackend(t, pools, prometheus.NewRegistry())
	start(t, b, provider.Env{Services: serviceLister(t), ServicesSynced: synced.Load})
	if _, err := ensureNow(t, b, lbService("a", 0)); !errors.Is(err, ErrStateNotRecovered) {
		t.Fatalf("Ensure before sync: %v, want ErrStateNotRecovered", err)
	}
	synced.Store(true)
	if ips, err := ensure(t, b, lbService("a", 0)); err != nil || len(ips) != 1 {
		t.Fatalf("Ensure after sync: %v %v", ips, err)
	}
}

func TestRecoveryKeepsAddressesFromStatus(t *testing.T) {
	foreign := lbService("foreign", 0, "192.0.2.10")
	class := "example.com/other"
	foreign.Spec.LoadBalancerClass = &class
	old := lbService("old", 1, "192.0.2.11")
	clash := lbService("clash", 2, "192.0.2.11") // claims old's address; old is older
	f := newFixture(t, foreign, old, clash)

	if ips, err := ensure(t, f.backend, old); err != nil || !slices.Equal(ips, []string{"192.0.2.11"}) {
		t.Fatalf("old: %v %v, want its address from status", ips, err)
	}
	if events := f.events(); len(events) != 0 {
		t.Errorf("re-ensuring a recovered Service emitted %v", events)
	}
	// The foreign-class Service's address is not herald's: it is free.
	fresh, err := ensure(t, f.backend, lbService("fresh", 3))
	if err != nil || !slices.Equal(fresh, []string{"192.0.2.10"}) {
		t.Fatalf("fresh: %v %v", fresh, err)
	}
	moved, err := ensure(t, f.backend, clash)
	if err != nil || !slices.Equal(moved, []string{"192.0.2.12"}) {
		t.Fatalf("clash: %v %v, want a new address", moved, err)
	}
	if events := f.events(); len(events) != 2 || !strings.Contains(events[1], ReasonIPAllocated+" Assigned 192.0.2.12 from pool p") {
		t.Errorf("events = %v", events)
	}
}

func TestExhaustionIsAnAllocationError(t *testing.T) {
	f := newFixture(t)
	for _, name := range []string{"a", "b", "c"} {
		if _, err := ensure(t, f.backend, lbService(name, 0)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := ensure(t, f.backend, lbService("d", 0))
	var reasoned provider.ReasonedError
	if !errors.As(err, &reasoned) || reasoned.Reason() != ReasonAllocationFailed || !errors.Is(err, ipam.ErrPoolExhausted) {
		t.Fatalf("error = %v, want an AllocationFailed wrapping ErrPoolExhausted", err)
	}
}

// Deleting releases the addresses and, without claims to watch, has the
// Services waiting for one synced again at once.
func TestDeleteReleasesAndRequeuesTheWaiting(t *testing.T) {
	f := newFixture(t)
	svc := lbService("a", 0)
	ips, err := ensure(t, f.backend, svc)
	if err != nil {
		t.Fatal(err)
	}
	f.events()
	pending := f.requeues.pending.Load()
	ref := service.RefOf(svc)
	if err := f.backend.Delete(context.Background(), ref); err != nil {
		t.Fatal(err)
	}
	if events := f.events(); len(events) != 1 || !strings.Contains(events[0], ReasonIPReleased) {
		t.Errorf("events = %v, want one IPReleased", events)
	}
	if _, held := f.backend.alloc.Assigned(ref.Key()); held {
		t.Error("the allocator still holds the Service's addresses after Delete")
	}
	if got := f.requeues.pending.Load() - pending; got != 1 {
		t.Errorf("Delete requeued the pending Services %d times, want once", got)
	}
	if err := f.backend.Delete(context.Background(), ref); err != nil || len(f.events()) != 0 {
		t.Errorf("second Delete: %v, events %v; want a silent no-op", err, f.events())
	}
	if got := f.requeues.pending.Load() - pending; got != 1 {
		t.Errorf("a Delete that freed nothing requeued the pending Services")
	}
	again, err := ensure(t, f.backend, lbService("b", 0))
	if err != nil || !slices.Equal(again, ips) {
		t.Errorf("released address not reused: %v %v", again, err)
	}
}

// The names follow the issue and MetalLB's metallb_allocator_addresses_total,
// a gauge despite the suffix, so dashboards carry over. The metrics are on
// the registry the backend was given, not a global one.
func TestPoolMetricsFollowAllocations(t *testing.T) {
	f := newFixture(t)
	if _, err := ensure(t, f.backend, lbService("a", 0)); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP herald_pool_addresses_in_use Addresses of an address pool assigned to Services or claimed by another herald-ccm instance (a shared address counts once), by IP family.
# TYPE herald_pool_addresses_in_use gauge
herald_pool_addresses_in_use{family="IPv4",pool="p"} 1
# HELP herald_pool_addresses_total Addresses in an address pool, by IP family.
# TYPE herald_pool_addresses_total gauge
herald_pool_addresses_total{family="IPv4",pool="p"} 3
`
	if err := testutil.GatherAndCompare(f.registry, strings.NewReader(want),
		"herald_pool_addresses_total", "herald_pool_addresses_in_use"); err != nil {
		t.Fatal(err)
	}
	if err := f.backend.Delete(context.Background(), service.RefOf(lbService("a", 0))); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(f.registry,
		strings.NewReader(strings.Replace(want, `pool="p"} 1`, `pool="p"} 0`, 1)),
		"herald_pool_addresses_total", "herald_pool_addresses_in_use"); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

// Ensure records the pool of the addresses for the Service's annotation.
func TestEnsureNamesThePool(t *testing.T) {
	f := newFixture(t)
	waitServing(t, f.backend)
	lb, err := service.Build(lbService("a", 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	result, err := f.backend.Ensure(context.Background(), lb)
	if err != nil {
		t.Fatal(err)
	}
	if got := result.Annotations[v1alpha1.AnnotationAllocatedFromPool]; got != "p" || !slices.Equal(f.backend.AnnotationKeys(), []string{v1alpha1.AnnotationAllocatedFromPool}) {
		t.Errorf("annotations %v (keys %v), want the pool p", result.Annotations, f.backend.AnnotationKeys())
	}
}

// Changed pools have every Service synced again; pools given again
// unchanged (as each status refresh does) have none.
func TestChangedPoolsRequeueEveryService(t *testing.T) {
	f := newFixture(t)
	waitServing(t, f.backend)
	ctx := context.Background()
	before := f.requeues.all.Load()
	if _, err := f.backend.applyPools(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got := f.requeues.all.Load() - before; got != 0 {
		t.Errorf("unchanged pools requeued %d times", got)
	}
	if _, err := f.backend.applyPools(ctx, []*v1alpha1.IPAddressPool{{ObjectMeta: metav1.ObjectMeta{Name: "more"},
		Spec: v1alpha1.IPAddressPoolSpec{Addresses: []string{"198.51.100.0/30"}}}}); err != nil {
		t.Fatal(err)
	}
	if got := f.requeues.all.Load() - before; got != 1 {
		t.Errorf("a new pool requeued %d times, want once", got)
	}
}

// An address whose pool is deleted stays with its Service, reported by a
// warning naming the pool and by the outside metric; a restart restores
// it under the pool the Service recorded.
func TestAddressOutsideEveryPoolIsKept(t *testing.T) {
	registry := prometheus.NewRegistry()
	b := newBackend(t, nil, registry)
	start(t, b, provider.Env{Services: serviceLister(t), ServicesSynced: func() bool { return true }})
	waitServing(t, b)
	ctx := context.Background()
	blue := []*v1alpha1.IPAddressPool{{ObjectMeta: metav1.ObjectMeta{Name: "blue"},
		Spec: v1alpha1.IPAddressPoolSpec{Addresses: []string{"198.51.100.0/30"}}}}
	if _, err := b.applyPools(ctx, blue); err != nil {
		t.Fatal(err)
	}
	svc := lbService("a", 0)
	lb, err := service.Build(svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	first, err := b.Ensure(ctx, lb)
	if err != nil || first.Warning != nil {
		t.Fatalf("Ensure = %+v, %v", first, err)
	}
	if _, err := b.applyPools(ctx, nil); err != nil {
		t.Fatal(err)
	}
	kept, err := b.Ensure(ctx, lb)
	if err != nil || kept.Warning == nil || kept.Warning.Reason != ReasonAddressOutsidePools ||
		!strings.Contains(kept.Warning.Message, "pool blue") || !strings.Contains(kept.Warning.Message, "198.51.100.0") {
		t.Fatalf("after the pool went: %+v, %v; want a warning naming the address and pool blue", kept, err)
	}
	if !apiequality.Semantic.DeepEqual(kept.Status, first.Status) || kept.Annotations[v1alpha1.AnnotationAllocatedFromPool] != "blue" {
		t.Errorf("after the pool went: status %+v, annotations %v; want both unchanged", kept.Status, kept.Annotations)
	}
	want := `
# HELP herald_addresses_outside_pools Addresses Services keep that no address pool holds any more (their pool was deleted or shrunk), by IP family.
# TYPE herald_addresses_outside_pools gauge
herald_addresses_outside_pools{family="IPv4"} 1
herald_addresses_outside_pools{family="IPv6"} 0
`
	if err := testutil.GatherAndCompare(registry, strings.NewReader(want), "herald_addresses_outside_pools"); err != nil {
		t.Error(err)
	}

	// A restart: the Service shows the address and records pool blue.
	svc.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "198.51.100.0"}}
	svc.Annotations = map[string]string{v1alpha1.AnnotationAllocatedFromPool: "blue"}
	restarted := newBackend(t, nil, prometheus.NewRegistry())
	start(t, restarted, provider.Env{Services: serviceLister(t, svc), ServicesSynced: func() bool { return true }})
	waitServing(t, restarted)
	again, err := restarted.Ensure(ctx, lb)
	if err != nil || again.Warning == nil || !strings.Contains(again.Warning.Message, "pool blue") ||
		!apiequality.Semantic.DeepEqual(again.Status, first.Status) {
		t.Fatalf("after a restart: %+v, %v; want the address kept and reported", again, err)
	}
}
