package baremetal

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/heraldlb/herald/bare-metal/claims"
	"github.com/heraldlb/herald/bare-metal/claims/claimstest"
	"github.com/heraldlb/herald/bare-metal/ipam"
	"github.com/heraldlb/herald/provider"
	"github.com/heraldlb/herald/provider/service"
)

var claimNow = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return claimNow }

// instance is one herald-ccm's backend over the shared fake apiserver,
// with its own allocator over pool 192.0.2.0/28, its own view of the
// claims and the Services informer they share (services).
type instance struct {
	backend *Backend
	claims  *claims.Store
	// lost counts the claims this instance lost to the other.
	lost atomic.Int32
}

// claimView is how an instance's claim informer keeps up.
type claimView int

const (
	// fresh: every claim reaches the allocator as soon as it is written.
	fresh claimView = iota
	// lagging: the informer's handler lags, so the allocator learns of
	// the other instance's claims only by losing to them; reads of the
	// claims (to follow the other's allocations) are fresh.
	lagging
)

func newInstance(t *testing.T, api *claimstest.APIServer, view claimView, services cache.Indexer, now func() time.Time) *instance {
	t.Helper()
	pools := []ipam.Pool{{Name: "p", AutoAssign: true,
		Ranges: []ipam.Range{{First: netip.MustParseAddr("192.0.2.0"), Last: netip.MustParseAddr("192.0.2.15")}}}}
	b := newBackend(t, pools, prometheus.NewRegistry())
	in := &instance{backend: b}
	if view == fresh {
		api.Watch(reservations{b})
		for _, obj := range api.Cache().List() { // the informer's initial list
			claims.Observe(context.Background(), reservations{b}, obj, false)
		}
	}
	in.claims = claims.NewStore(api, api.Cache(), now, time.Minute)
	b.claims, b.claimsSynced = countLosses{in.claims, &in.lost}, func() bool { return true }
	start(t, b, provider.Env{
		Services:       corelisters.NewServiceLister(services),
		ServicesSynced: func() bool { return true },
		Recorder:       record.NewFakeRecorder(1000),
	})
	waitServing(t, b)
	return in
}

// countLosses counts the claims lost to another instance.
type countLosses struct {
	*claims.Store
	lost *atomic.Int32
}

func (c countLosses) Claim(ctx context.Context, req ipam.Request, uid string, ips []netip.Addr, shown func(netip.Addr) bool) error {
	err := c.Store.Claim(ctx, req, uid, ips, shown)
	var lost *claims.ClaimedError
	if errors.As(err, &lost) {
		c.lost.Add(1)
	}
	return err
}

// tryEnsure ensures svc and returns the addresses of its status. It does
// not fail the test, so goroutines other than the test's may call it.
func (in *instance) tryEnsure(svc *v1.Service) ([]string, error) {
	lb, err := service.Build(svc, nil)
	if err != nil {
		return nil, err
	}
	result, err := in.backend.Ensure(context.Background(), lb)
	if err != nil {
		return nil, fmt.Errorf("ensure %s: %w", svc.Name, err)
	}
	var ips []string
	for _, in := range result.Status.Ingress {
		ips = append(ips, in.IP)
	}
	return ips, nil
}

func (in *instance) ensure(t *testing.T, svc *v1.Service) []string {
	t.Helper()
	ips, err := in.tryEnsure(svc)
	if err != nil {
		t.Fatal(err)
	}
	return ips
}

func newServices() cache.Indexer {
	return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
}

// The instance that claims second loses the address, even though its
// informer had not seen the winner's claim, and takes another.
func TestLoserOfAClaimRaceAllocatesAnother(t *testing.T) {
	api := claimstest.NewAPIServer()
	services := newServices()
	a := newInstance(t, api, fresh, services, fixedNow)
	b := newInstance(t, api, lagging, services, fixedNow)
	if got := a.ensure(t, lbService("one", 0)); !slices.Equal(got, []string{"192.0.2.0"}) {
		t.Fatalf("one got %v", got)
	}
	if got := b.ensure(t, lbService("two", 0)); !slices.Equal(got, []string{"192.0.2.1"}) {
		t.Fatalf("two got %v, want the next address after losing 192.0.2.0", got)
	}
	if b.lost.Load() != 1 {
		t.Errorf("b lost %d claims, want 1", b.lost.Load())
	}
	if got := api.Holders("192.0.2.0"); !slices.Equal(got, []string{"ns/one"}) {
		t.Errorf("claim 192.0.2.0 held by %v", got)
	}
	if got := api.Holders("192.0.2.1"); !slices.Equal(got, []string{"ns/two"}) {
		t.Errorf("claim 192.0.2.1 held by %v", got)
	}
}

// Services sharing an address hold one claim; it goes with the last one.
func TestSharedAddressHasOneClaim(t *testing.T) {
	api := claimstest.NewAPIServer()
	services := newServices()
	a := newInstance(t, api, fresh, services, fixedNow)
	b := newInstance(t, api, fresh, services, fixedNow)
	shared := func(name string, port int32) *v1.Service {
		svc := lbService(name, 0)
		svc.Annotations = map[string]string{service.AnnotationAllowSharedIP: "k", service.AnnotationLoadBalancerIPs: "192.0.2.5"}
		svc.Spec.Ports[0].Port = port
		return svc
	}
	a.ensure(t, shared("web", 80))
	b.ensure(t, shared("tls", 443))
	if got := api.Holders("192.0.2.5"); !slices.Equal(got, []string{"ns/web", "ns/tls"}) {
		t.Fatalf("claim holders %v, want web and tls", got)
	}
	// A port clash loses, on either instance.
	if _, err := b.tryEnsure(shared("clash", 80)); err == nil {
		t.Fatal("a Service clashing on port 80 was given the shared address")
	}
	if err := a.backend.Delete(context.Background(), service.RefOf(shared("web", 80))); err != nil {
		t.Fatal(err)
	}
	if got := api.Holders("192.0.2.5"); !slices.Equal(got, []string{"ns/tls"}) {
		t.Fatalf("after web left: holders %v", got)
	}
	if err := a.backend.Delete(context.Background(), service.RefOf(shared("tls", 443))); err != nil {
		t.Fatal(err)
	}
	if api.Count() != 0 {
		t.Fatalf("%d claims left after both Services went", api.Count())
	}
}

// Two instances ensuring the same Services at once never leave two
// Services showing one address, and every address shown is claimed for
// the Service showing it. Neither allocator hears of the other's claims
// but by losing to them, and they go through the Services in opposite
// orders, so they pick the same addresses for different Services: the
// test checks that they did contend. The goroutines only collect results; the test's own
// goroutine judges them.
func TestTwoInstancesNeverShowOneAddressTwice(t *testing.T) {
	api := claimstest.NewAPIServer()
	services := newServices()
	a := newInstance(t, api, lagging, services, fixedNow)
	b := newInstance(t, api, lagging, services, fixedNow)
	const n = 12
	var svcs []*v1.Service
	for i := range n {
		svcs = append(svcs, lbService(fmt.Sprintf("s%02d", i), i))
	}
	var mu sync.Mutex
	status := map[string][]string{} // last write wins, as on the apiserver
	var errs []error
	ensure := func(in *instance, svc *v1.Service) {
		ips, err := in.tryEnsure(svc)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, err)
			return
		}
		status[svc.Name] = ips
	}
	// In lock step: at the first step both pick the lowest address for
	// different Services, so one of them must lose.
	for i := range n {
		var wg sync.WaitGroup
		wg.Go(func() { ensure(a, svcs[i]) })
		wg.Go(func() { ensure(b, svcs[n-1-i]) })
		wg.Wait()
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if lost := a.lost.Load() + b.lost.Load(); lost == 0 {
		t.Fatal("the instances never contended for an address: the test proves nothing")
	} else {
		t.Logf("the instances lost %d claims to each other", lost)
	}
	if counted := testutil.ToFloat64(a.backend.metrics.claimsLost) + testutil.ToFloat64(b.backend.metrics.claimsLost); counted != float64(a.lost.Load()+b.lost.Load()) {
		t.Errorf("herald_address_claims_lost_total counts %v, the instances lost %d", counted, a.lost.Load()+b.lost.Load())
	}
	if len(status) != n {
		t.Fatalf("%d of %d Services got addresses", len(status), n)
	}
	seen := map[string]string{}
	for name, ips := range status {
		if len(ips) != 1 {
			t.Errorf("%s shows %v", name, ips)
			continue
		}
		if other, dup := seen[ips[0]]; dup {
			t.Errorf("%s and %s both show %s", name, other, ips[0])
		}
		seen[ips[0]] = name
		if holders := api.Holders(ips[0]); !slices.Contains(holders, "ns/"+name) {
			t.Errorf("%s shows %s, claimed by %v", name, ips[0], holders)
		}
	}
}

// Garbage collection removes claims nobody shows once the grace period is
// over, and keeps those shown in a Service's status.
func TestCollectRemovesStaleClaims(t *testing.T) {
	api := claimstest.NewAPIServer()
	services := newServices()
	var mu sync.Mutex
	now := claimNow
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	in := newInstance(t, api, fresh, services, clock)
	kept := lbService("kept", 0)
	ips := in.ensure(t, kept)
	kept.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: ips[0]}}
	if err := services.Add(kept); err != nil {
		t.Fatal(err)
	}
	in.ensure(t, lbService("gone", 0)) // claimed; its Service never shows up
	collect := func() {
		t.Helper()
		if err := in.claims.Collect(context.Background(), in.backend.viewOf); err != nil {
			t.Fatal(err)
		}
	}
	collect()
	if api.Count() != 2 {
		t.Fatalf("within the grace period %d claims remain, want 2", api.Count())
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	collect()
	if got := api.Count(); got != 1 || !slices.Equal(api.Holders(ips[0]), []string{"ns/kept"}) {
		t.Fatalf("after the grace period: %d claims, %s held by %v", got, ips[0], api.Holders(ips[0]))
	}
}

// A restarted instance whose Services show claimed addresses writes
// nothing: not the Services, not the claims.
func TestRecoveryWithClaimsWritesNothing(t *testing.T) {
	api := claimstest.NewAPIServer()
	services := newServices()
	first := newInstance(t, api, fresh, services, fixedNow)
	var svcs []*v1.Service
	for i := range 5 {
		svc := lbService(fmt.Sprintf("s%d", i), i)
		ips := first.ensure(t, svc)
		svc.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: ips[0]}}
		if err := services.Add(svc); err != nil {
			t.Fatal(err)
		}
		svcs = append(svcs, svc)
	}
	writes := api.Writes()
	later := func() time.Time { return claimNow.Add(time.Hour) }
	restarted := newInstance(t, api, fresh, services, later)
	for _, svc := range svcs {
		if got := restarted.ensure(t, svc); got[0] != svc.Status.LoadBalancer.Ingress[0].IP {
			t.Errorf("%s moved from %s to %v", svc.Name, svc.Status.LoadBalancer.Ingress[0].IP, got)
		}
	}
	if api.Writes() != writes {
		t.Errorf("%d claim writes after the restart, want 0", api.Writes()-writes)
	}
}

func TestOnePerFamily(t *testing.T) {
	v4, v6 := []ipam.Family{ipam.IPv4}, []ipam.Family{ipam.IPv6, ipam.IPv4}
	tests := []struct {
		name     string
		ips      []string
		families []ipam.Family
		want     []string
	}{
		{name: "none", families: v4},
		{name: "one", ips: []string{"192.0.2.1"}, families: v4, want: []string{"192.0.2.1"}},
		{name: "ordered by the request's families", ips: []string{"192.0.2.1", "2001:db8::1"}, families: v6, want: []string{"2001:db8::1", "192.0.2.1"}},
		{name: "two of one family: ambiguous", ips: []string{"192.0.2.1", "192.0.2.2"}, families: v4},
		{name: "a family not requested: ambiguous", ips: []string{"192.0.2.1", "2001:db8::1"}, families: v4},
		{name: "a requested family missing: the rest", ips: []string{"192.0.2.1"}, families: v6, want: []string{"192.0.2.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ips []netip.Addr
			for _, s := range tt.ips {
				ips = append(ips, netip.MustParseAddr(s))
			}
			var got []string
			for _, ip := range onePerFamily(ips, tt.families) {
				got = append(got, ip.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("onePerFamily = %v, want %v", got, tt.want)
			}
		})
	}
}

// A claim that goes frees its address: the Services waiting for one are
// synced again. A claim that stays, or one whose address a Service of this
// instance holds, frees nothing.
func TestDroppedClaimRequeuesTheWaiting(t *testing.T) {
	f := newFixture(t)
	waitServing(t, f.backend)
	ctx := context.Background()
	held, err := ensure(t, f.backend, lbService("a", 0))
	if err != nil {
		t.Fatal(err)
	}
	r := reservations{f.backend}
	other := netip.MustParseAddr("192.0.2.12")
	r.Reserve(ctx, other, []ipam.Request{{Service: "elsewhere/x"}})
	r.Reserve(ctx, netip.MustParseAddr(held[0]), []ipam.Request{{Service: "ns/a"}})
	before := f.requeues.pending.Load()
	r.Reserve(ctx, netip.MustParseAddr(held[0]), nil) // ours: still held
	if got := f.requeues.pending.Load() - before; got != 0 {
		t.Errorf("dropping the claim of a held address requeued %d times", got)
	}
	r.Reserve(ctx, other, nil)
	if got := f.requeues.pending.Load() - before; got != 1 {
		t.Errorf("a freed address requeued %d times, want once", got)
	}
}

// A Service moved from a stale view keeps the claim of the address its
// live status shows: another instance just wrote it there.
func TestReleaseKeepsTheClaimOfTheLiveStatus(t *testing.T) {
	api := claimstest.NewAPIServer()
	services := newServices()
	in := newInstance(t, api, fresh, services, fixedNow)
	svc := lbService("x", 0)
	ctx := context.Background()
	p, q := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	req := ipam.Request{Service: "ns/x"}
	for _, ip := range []netip.Addr{p, q} {
		if err := in.claims.Claim(ctx, req, string(svc.UID), []netip.Addr{ip}, func(netip.Addr) bool { return false }); err != nil {
			t.Fatal(err)
		}
	}
	live := svc.DeepCopy()
	live.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: q.String()}}
	in.backend.services = fake.NewClientset(live).CoreV1()
	// This instance moves x from q to p: the live status shows q.
	in.backend.released(ctx, "ns/x", svc.UID, []netip.Addr{q}, []netip.Addr{p})
	if got := api.Holders(q.String()); !slices.Equal(got, []string{"ns/x"}) {
		t.Errorf("the claim of %s, which the live status shows, is held by %v", q, got)
	}
	// Once the live status shows p, q goes.
	live.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: p.String()}}
	in.backend.services = fake.NewClientset(live).CoreV1()
	in.backend.released(ctx, "ns/x", svc.UID, []netip.Addr{q}, []netip.Addr{p})
	if got := api.Holders(q.String()); len(got) != 0 {
		t.Errorf("the claim of %s is still held by %v", q, got)
	}
}
