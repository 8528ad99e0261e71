package baremetal

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/heraldlb/herald/bare-metal/ipam"
	"github.com/heraldlb/herald/provider"
	"github.com/heraldlb/herald/provider/service"
)

var ipAddressResource = networkingv1.Resource("ipaddresses")

// fakeAPIServer stores IPAddresses as the apiserver does for claims:
// create fails on an existing name, update and delete check the
// resourceVersion (and delete the UID) they were given. Its contents are
// also the claim cache, always fresh unless a test says otherwise; watchers
// get every change, as informer handlers would.
type fakeAPIServer struct {
	mu       sync.Mutex
	objs     map[string]*networkingv1.IPAddress
	rv       int
	writes   int
	watchers []func(obj *networkingv1.IPAddress, deleted bool)
}

func newFakeAPIServer() *fakeAPIServer {
	return &fakeAPIServer{objs: map[string]*networkingv1.IPAddress{}}
}

func (f *fakeAPIServer) notify(obj *networkingv1.IPAddress, deleted bool) {
	for _, w := range f.watchers {
		w(obj.DeepCopy(), deleted)
	}
}

func (f *fakeAPIServer) Get(_ context.Context, name string, _ metav1.GetOptions) (*networkingv1.IPAddress, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	obj, ok := f.objs[name]
	if !ok {
		return nil, apierrors.NewNotFound(ipAddressResource, name)
	}
	return obj.DeepCopy(), nil
}

func (f *fakeAPIServer) Create(_ context.Context, obj *networkingv1.IPAddress, _ metav1.CreateOptions) (*networkingv1.IPAddress, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.objs[obj.Name]; ok {
		return nil, apierrors.NewAlreadyExists(ipAddressResource, obj.Name)
	}
	f.rv++
	f.writes++
	stored := obj.DeepCopy()
	stored.ResourceVersion = strconv.Itoa(f.rv)
	stored.UID = types.UID("uid-" + strconv.Itoa(f.rv))
	f.objs[obj.Name] = stored
	f.notify(stored, false)
	return stored.DeepCopy(), nil
}

func (f *fakeAPIServer) Update(_ context.Context, obj *networkingv1.IPAddress, _ metav1.UpdateOptions) (*networkingv1.IPAddress, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.objs[obj.Name]
	if !ok {
		return nil, apierrors.NewNotFound(ipAddressResource, obj.Name)
	}
	if obj.ResourceVersion != cur.ResourceVersion {
		return nil, apierrors.NewConflict(ipAddressResource, obj.Name, fmt.Errorf("resourceVersion %s is not %s", obj.ResourceVersion, cur.ResourceVersion))
	}
	f.rv++
	f.writes++
	stored := obj.DeepCopy()
	stored.ResourceVersion = strconv.Itoa(f.rv)
	f.objs[obj.Name] = stored
	f.notify(stored, false)
	return stored.DeepCopy(), nil
}

func (f *fakeAPIServer) Delete(_ context.Context, name string, opts metav1.DeleteOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.objs[name]
	if !ok {
		return apierrors.NewNotFound(ipAddressResource, name)
	}
	if p := opts.Preconditions; p != nil && (p.UID != nil && *p.UID != cur.UID || p.ResourceVersion != nil && *p.ResourceVersion != cur.ResourceVersion) {
		return apierrors.NewConflict(ipAddressResource, name, fmt.Errorf("precondition failed"))
	}
	f.writes++
	delete(f.objs, name)
	f.notify(cur, true)
	return nil
}

// claimCache over the fake's contents.
func (f *fakeAPIServer) cache() claimCache { return fakeCache{f} }

type fakeCache struct{ f *fakeAPIServer }

func (c fakeCache) Get(name string) (*networkingv1.IPAddress, bool) {
	obj, err := c.f.Get(context.Background(), name, metav1.GetOptions{})
	return obj, err == nil
}

func (c fakeCache) ByHolder(service string) []*networkingv1.IPAddress {
	var out []*networkingv1.IPAddress
	for _, obj := range c.List() {
		if names, _ := holderIndex(obj); slices.Contains(names, service) {
			out = append(out, obj)
		}
	}
	return out
}

func (c fakeCache) List() []*networkingv1.IPAddress {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	var out []*networkingv1.IPAddress
	for _, obj := range c.f.objs {
		out = append(out, obj.DeepCopy())
	}
	return out
}

// emptyCache is an informer that has not seen anything yet.
type emptyCache struct{}

func (emptyCache) Get(string) (*networkingv1.IPAddress, bool) { return nil, false }
func (emptyCache) ByHolder(string) []*networkingv1.IPAddress  { return nil }
func (emptyCache) List() []*networkingv1.IPAddress            { return nil }

// holders lists the Services the claim of ip names.
func (f *fakeAPIServer) holders(ip string) []string {
	obj, ok := fakeCache{f}.Get(ip)
	if !ok {
		return nil
	}
	names, _ := holderIndex(obj)
	return names
}

func (f *fakeAPIServer) count() int { return len(fakeCache{f}.List()) }

func (f *fakeAPIServer) watch(w func(*networkingv1.IPAddress, bool)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchers = append(f.watchers, w)
}

// instance is one herald-ccm's backend over the shared fake apiserver,
// with its own allocator over pool 192.0.2.0/28 and its own Services
// informer (services).
type instance struct {
	backend *Backend
	claims  *claimStore
}

func newInstance(t *testing.T, api *fakeAPIServer, cacheOf claimCache, services cache.Indexer, now func() time.Time) *instance {
	t.Helper()
	alloc, err := ipam.New([]ipam.Pool{{Name: "p", AutoAssign: true,
		Ranges: []ipam.Range{{First: netip.MustParseAddr("192.0.2.0"), Last: netip.MustParseAddr("192.0.2.15")}}}})
	if err != nil {
		t.Fatal(err)
	}
	b := New(alloc, nil)
	store := &claimStore{api: api, cache: cacheOf, now: now, grace: time.Minute}
	b.claims, b.claimsSynced = store, func() bool { return true }
	api.watch(func(obj *networkingv1.IPAddress, deleted bool) {
		if deleted {
			b.claimDeleted(obj)
		} else {
			b.claimChanged(context.Background(), obj)
		}
	})
	err = b.Start(context.Background(), provider.Env{
		Services:       corelisters.NewServiceLister(services),
		ServicesSynced: func() bool { return true },
		Recorder:       record.NewFakeRecorder(1000),
	})
	if err != nil {
		t.Fatal(err)
	}
	return &instance{backend: b, claims: store}
}

func (in *instance) ensure(t *testing.T, svc *v1.Service) []string {
	t.Helper()
	lb, err := service.Build(svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	status, err := in.backend.Ensure(context.Background(), lb)
	if err != nil {
		t.Fatalf("Ensure %s: %v", svc.Name, err)
	}
	var ips []string
	for _, in := range status.Ingress {
		ips = append(ips, in.IP)
	}
	return ips
}

func fixedNow() time.Time { return claimNow }

// The instance that claims second loses the address, even though its
// informer had not seen the winner's claim, and takes another.
func TestLoserOfAClaimRaceAllocatesAnother(t *testing.T) {
	api := newFakeAPIServer()
	services := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	a := newInstance(t, api, api.cache(), services, fixedNow)
	b := newInstance(t, api, emptyCache{}, services, fixedNow)  // its informer lags
	b.backend.alloc.Unreserve(netip.MustParseAddr("192.0.2.0")) // nor did its handler run
	if got := a.ensure(t, lbService("one", 0)); !slices.Equal(got, []string{"192.0.2.0"}) {
		t.Fatalf("one got %v", got)
	}
	b.backend.alloc.Unreserve(netip.MustParseAddr("192.0.2.0"))
	if got := b.ensure(t, lbService("two", 0)); !slices.Equal(got, []string{"192.0.2.1"}) {
		t.Fatalf("two got %v, want the next address after losing 192.0.2.0", got)
	}
	if got := api.holders("192.0.2.0"); !slices.Equal(got, []string{"ns/one"}) {
		t.Errorf("claim 192.0.2.0 held by %v", got)
	}
	if got := api.holders("192.0.2.1"); !slices.Equal(got, []string{"ns/two"}) {
		t.Errorf("claim 192.0.2.1 held by %v", got)
	}
}

// Services sharing an address hold one claim; it goes with the last one.
func TestSharedAddressHasOneClaim(t *testing.T) {
	api := newFakeAPIServer()
	services := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	a := newInstance(t, api, api.cache(), services, fixedNow)
	b := newInstance(t, api, api.cache(), services, fixedNow)
	shared := func(name string, port int32) *v1.Service {
		svc := lbService(name, 0)
		svc.Annotations = map[string]string{service.AnnotationAllowSharedIP: "k", service.AnnotationLoadBalancerIPs: "192.0.2.5"}
		svc.Spec.Ports[0].Port = port
		return svc
	}
	a.ensure(t, shared("web", 80))
	b.ensure(t, shared("tls", 443))
	if got := api.holders("192.0.2.5"); !slices.Equal(got, []string{"ns/web", "ns/tls"}) {
		t.Fatalf("claim holders %v, want web and tls", got)
	}
	// A port clash loses, on either instance.
	lb, _ := service.Build(shared("clash", 80), nil)
	if _, err := b.backend.Ensure(context.Background(), lb); err == nil {
		t.Fatal("a Service clashing on port 80 was given the shared address")
	}
	if err := a.backend.Delete(context.Background(), service.RefOf(shared("web", 80))); err != nil {
		t.Fatal(err)
	}
	if got := api.holders("192.0.2.5"); !slices.Equal(got, []string{"ns/tls"}) {
		t.Fatalf("after web left: holders %v", got)
	}
	if err := a.backend.Delete(context.Background(), service.RefOf(shared("tls", 443))); err != nil {
		t.Fatal(err)
	}
	if api.count() != 0 {
		t.Fatalf("%d claims left after both Services went", api.count())
	}
}

// Two instances ensuring the same Services concurrently never leave two
// Services showing one address, and every address shown is claimed for
// the Service showing it.
func TestTwoInstancesNeverShowOneAddressTwice(t *testing.T) {
	api := newFakeAPIServer()
	services := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	instances := []*instance{
		newInstance(t, api, api.cache(), services, fixedNow),
		newInstance(t, api, api.cache(), services, fixedNow),
	}
	const n = 12
	var mu sync.Mutex
	status := map[string][]string{} // last write wins, as on the apiserver
	var wg sync.WaitGroup
	for i := range n {
		svc := lbService(fmt.Sprintf("s%02d", i), i)
		for _, in := range instances {
			wg.Go(func() {
				ips := in.ensure(t, svc)
				mu.Lock()
				status[svc.Name] = ips
				mu.Unlock()
			})
		}
	}
	wg.Wait()
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
		if holders := api.holders(ips[0]); !slices.Contains(holders, "ns/"+name) {
			t.Errorf("%s shows %s, claimed by %v", name, ips[0], holders)
		}
	}
}

// Garbage collection removes claims nobody shows once the grace period is
// over, and keeps those shown in a Service's status.
func TestCollectRemovesStaleClaims(t *testing.T) {
	api := newFakeAPIServer()
	services := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	now := claimNow
	clock := func() time.Time { return now }
	in := newInstance(t, api, api.cache(), services, clock)
	kept := lbService("kept", 0)
	ips := in.ensure(t, kept)
	kept.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: ips[0]}}
	if err := services.Add(kept); err != nil {
		t.Fatal(err)
	}
	in.ensure(t, lbService("gone", 0)) // claimed; its Service never shows up
	collect := func() {
		t.Helper()
		if err := in.claims.collect(context.Background(), in.backend.viewOf); err != nil {
			t.Fatal(err)
		}
	}
	collect()
	if api.count() != 2 {
		t.Fatalf("within the grace period %d claims remain, want 2", api.count())
	}
	now = now.Add(2 * time.Minute)
	collect()
	if got := api.count(); got != 1 || !slices.Equal(api.holders(ips[0]), []string{"ns/kept"}) {
		t.Fatalf("after the grace period: %d claims, %s held by %v", got, ips[0], api.holders(ips[0]))
	}
}

// A restarted instance whose Services show claimed addresses writes
// nothing: not the Services, not the claims.
func TestRecoveryWithClaimsWritesNothing(t *testing.T) {
	api := newFakeAPIServer()
	services := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	first := newInstance(t, api, api.cache(), services, fixedNow)
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
	writes := api.writes
	later := func() time.Time { return claimNow.Add(time.Hour) }
	restarted := newInstance(t, api, api.cache(), services, later)
	for _, obj := range api.cache().List() {
		restarted.backend.claimChanged(context.Background(), obj) // the informer's initial list
	}
	for _, svc := range svcs {
		if got := restarted.ensure(t, svc); got[0] != svc.Status.LoadBalancer.Ingress[0].IP {
			t.Errorf("%s moved from %s to %v", svc.Name, svc.Status.LoadBalancer.Ingress[0].IP, got)
		}
	}
	if api.writes != writes {
		t.Errorf("%d claim writes after the restart, want 0", api.writes-writes)
	}
}

// snapshotCache is an informer that stopped at the moment it was taken.
type snapshotCache map[string]*networkingv1.IPAddress

func snapshot(f *fakeAPIServer) snapshotCache {
	s := snapshotCache{}
	for _, obj := range f.cache().List() {
		s[obj.Name] = obj
	}
	return s
}

func (s snapshotCache) Get(name string) (*networkingv1.IPAddress, bool) {
	obj, ok := s[name]
	return obj, ok
}

func (s snapshotCache) ByHolder(service string) []*networkingv1.IPAddress {
	var out []*networkingv1.IPAddress
	for _, obj := range s {
		if names, _ := holderIndex(obj); slices.Contains(names, service) {
			out = append(out, obj)
		}
	}
	return out
}

func (s snapshotCache) List() []*networkingv1.IPAddress { return slices.Collect(maps.Values(s)) }

// Writes from a stale cache fail on the resourceVersion, are decided again
// on what is live, and never drop a holder another instance added.
func TestClaimWritesFromAStaleCacheAreDecidedAgain(t *testing.T) {
	ctx := context.Background()
	ip := netip.MustParseAddr("192.0.2.7")
	api := newFakeAPIServer()
	fresh := &claimStore{api: api, cache: api.cache(), now: fixedNow, grace: time.Minute}
	web := holder("ns/web", 0, "k", 80)
	if err := fresh.claim(ctx, web, []netip.Addr{ip}, func(netip.Addr) bool { return false }); err != nil {
		t.Fatal(err)
	}
	stale := &claimStore{api: api, cache: snapshot(api), now: fixedNow, grace: time.Minute}
	if err := fresh.claim(ctx, holder("ns/dns", 0, "k", 53), []netip.Addr{ip}, func(netip.Addr) bool { return false }); err != nil {
		t.Fatal(err)
	}

	// Joining from the stale view: the update conflicts, the live claim
	// already has dns, and tls joins next to both.
	if err := stale.claim(ctx, holder("ns/tls", 0, "k", 443), []netip.Addr{ip}, func(netip.Addr) bool { return false }); err != nil {
		t.Fatal(err)
	}
	if got := api.holders(ip.String()); !slices.Equal(got, []string{"ns/web", "ns/dns", "ns/tls"}) {
		t.Fatalf("holders %v, want web, dns and tls", got)
	}
	// A clash only the live claim shows is still refused.
	if err := stale.claim(ctx, holder("ns/other-dns", 0, "k", 53), []netip.Addr{ip}, func(netip.Addr) bool { return false }); err == nil {
		t.Fatal("a port clash with a holder the cache did not show was accepted")
	}
	// Leaving from the stale view removes only the leaver.
	if err := stale.release(ctx, "ns/web", "", nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := api.holders(ip.String()); !slices.Equal(got, []string{"ns/dns", "ns/tls"}) {
		t.Fatalf("after web left: holders %v", got)
	}
	// The last holders leave: the claim is deleted, with preconditions
	// that a stale resourceVersion fails and a re-read passes.
	for _, svc := range []string{"ns/dns", "ns/tls"} {
		if err := stale.release(ctx, svc, "", []netip.Addr{ip}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if api.count() != 0 {
		t.Fatalf("%d claims left", api.count())
	}
}
