package baremetal

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/heraldlb/herald/bare-metal/ipam"
	"github.com/heraldlb/herald/provider"
	"github.com/heraldlb/herald/provider/service"
)

type fixture struct {
	backend  *Backend
	recorder *record.FakeRecorder
	synced   bool
}

// newFixture returns a backend over pool 192.0.2.10-192.0.2.12 whose
// informer already holds services.
func newFixture(t *testing.T, services ...*v1.Service) *fixture {
	t.Helper()
	alloc, err := ipam.New([]ipam.Pool{{Name: "p", AutoAssign: true,
		Ranges: []ipam.Range{{First: netip.MustParseAddr("192.0.2.10"), Last: netip.MustParseAddr("192.0.2.12")}}}})
	if err != nil {
		t.Fatal(err)
	}
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, svc := range services {
		if err := indexer.Add(svc); err != nil {
			t.Fatal(err)
		}
	}
	f := &fixture{backend: New(alloc, nil), recorder: record.NewFakeRecorder(100), synced: true}
	err = f.backend.Start(context.Background(), provider.Env{
		Services:       corelisters.NewServiceLister(indexer),
		ServicesSynced: func() bool { return f.synced },
		Recorder:       f.recorder,
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
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

func ensure(t *testing.T, b *Backend, svc *v1.Service) ([]string, error) {
	t.Helper()
	lb, err := service.Build(svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	status, err := b.Ensure(context.Background(), lb)
	if err != nil {
		return nil, err
	}
	var ips []string
	for _, in := range status.Ingress {
		if in.IPMode == nil || *in.IPMode != v1.LoadBalancerIPModeVIP {
			t.Errorf("ingress %s has ipMode %v, want VIP", in.IP, in.IPMode)
		}
		ips = append(ips, in.IP)
	}
	return ips, nil
}

func TestNothingIsAllocatedBeforeTheInformerSynced(t *testing.T) {
	f := newFixture(t)
	f.synced = false
	if _, err := ensure(t, f.backend, lbService("a", 0)); !errors.Is(err, ErrStateNotRecovered) {
		t.Fatalf("Ensure before sync: %v, want ErrStateNotRecovered", err)
	}
	f.synced = true
	if ips, err := ensure(t, f.backend, lbService("a", 0)); err != nil || len(ips) != 1 {
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

func TestDeleteReleasesAndGetReports(t *testing.T) {
	f := newFixture(t)
	svc := lbService("a", 0)
	ips, err := ensure(t, f.backend, svc)
	if err != nil {
		t.Fatal(err)
	}
	ref := service.RefOf(svc)
	status, exists, err := f.backend.Get(context.Background(), ref)
	if err != nil || !exists || status.Ingress[0].IP != ips[0] {
		t.Fatalf("Get = %v %v %v", status, exists, err)
	}
	f.events()
	if err := f.backend.Delete(context.Background(), ref); err != nil {
		t.Fatal(err)
	}
	if events := f.events(); len(events) != 1 || !strings.Contains(events[0], ReasonIPReleased) {
		t.Errorf("events = %v, want one IPReleased", events)
	}
	if _, exists, _ := f.backend.Get(context.Background(), ref); exists {
		t.Error("Get after Delete still reports the load balancer")
	}
	if err := f.backend.Delete(context.Background(), ref); err != nil || len(f.events()) != 0 {
		t.Errorf("second Delete: %v, events %v; want a silent no-op", err, f.events())
	}
	again, err := ensure(t, f.backend, lbService("b", 0))
	if err != nil || !slices.Equal(again, ips) {
		t.Errorf("released address not reused: %v %v", again, err)
	}
}

// The names follow the issue and MetalLB's metallb_allocator_addresses_total,
// a gauge despite the suffix, so dashboards carry over; hence the plain
// Prometheus comparison rather than component-base's linting one.
func TestPoolMetricsFollowAllocations(t *testing.T) {
	f := newFixture(t)
	if _, err := ensure(t, f.backend, lbService("a", 0)); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP herald_pool_addresses_in_use [ALPHA] Addresses of an address pool assigned to Services (a shared address counts once), by IP family.
# TYPE herald_pool_addresses_in_use gauge
herald_pool_addresses_in_use{family="IPv4",pool="p"} 1
# HELP herald_pool_addresses_total [ALPHA] Addresses in an address pool, by IP family.
# TYPE herald_pool_addresses_total gauge
herald_pool_addresses_total{family="IPv4",pool="p"} 3
`
	if err := testutil.GatherAndCompare(legacyregistry.DefaultGatherer, strings.NewReader(want),
		"herald_pool_addresses_total", "herald_pool_addresses_in_use"); err != nil {
		t.Fatal(err)
	}
	if err := f.backend.Delete(context.Background(), service.RefOf(lbService("a", 0))); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(legacyregistry.DefaultGatherer,
		strings.NewReader(strings.Replace(want, `pool="p"} 1`, `pool="p"} 0`, 1)),
		"herald_pool_addresses_total", "herald_pool_addresses_in_use"); err != nil {
		t.Fatalf("after release: %v", err)
	}
}
