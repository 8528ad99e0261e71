package claims

import (
	"context"
	"net/netip"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/ipam"
)

// Reservations is told about every claim in the cluster, so that an
// allocator keeps addresses other instances hold out of its picks.
type Reservations interface {
	// Reserve records that ip is held by holders; none means it is free.
	Reserve(ctx context.Context, ip netip.Addr, holders []ipam.Request)
}

// byHolder indexes claims by the Services holding them.
const byHolder = "holder"

// HolderIndex is the informer index of claims by holder; exported for
// caches in tests.
func HolderIndex(obj any) ([]string, error) {
	ip, ok := obj.(*networkingv1.IPAddress)
	if !ok {
		return nil, nil
	}
	c, err := readClaim(ip)
	if err != nil || !c.ours {
		return nil, nil //nolint:nilerr // a malformed claim indexes under no holder
	}
	names := make([]string, len(c.holders))
	for i, h := range c.holders {
		names[i] = h.Service
	}
	return names, nil
}

// indexedClaims is the Cache over the informer's indexer.
type indexedClaims struct{ indexer cache.Indexer }

func (i indexedClaims) Get(name string) (*networkingv1.IPAddress, bool) {
	obj, ok, err := i.indexer.GetByKey(name)
	if err != nil || !ok {
		return nil, false
	}
	ip, ok := obj.(*networkingv1.IPAddress)
	return ip, ok
}

func (i indexedClaims) ByHolder(service string) []*networkingv1.IPAddress {
	objs, _ := i.indexer.ByIndex(byHolder, service)
	return toIPAddresses(objs)
}

func (i indexedClaims) List() []*networkingv1.IPAddress { return toIPAddresses(i.indexer.List()) }

func toIPAddresses(objs []any) []*networkingv1.IPAddress {
	out := make([]*networkingv1.IPAddress, 0, len(objs))
	for _, obj := range objs {
		if ip, ok := obj.(*networkingv1.IPAddress); ok {
			out = append(out, ip)
		}
	}
	return out
}

// Watch starts an informer over herald's claims that tells reservations
// about each of them, and returns the Store over its cache with the
// informer handler's sync: only once it has synced does reservations know
// every claim, so allocating before would hand out addresses others hold.
// The caller checks that the IPAddress API is served (Kubernetes 1.33+).
func Watch(ctx context.Context, client kubernetes.Interface, reservations Reservations) (*Store, cache.InformerSynced, error) {
	// Only herald's claims: ClusterIPs' IPAddresses are met, if a pool
	// overlaps the service CIDR, as a failed create.
	selector := labels.SelectorFromSet(labels.Set{networkingv1.LabelManagedBy: Manager}).String()
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	informer := factory.Networking().V1().IPAddresses().Informer()
	// One claim per Service: at thousands of Services, managedFields
	// would be most of the cache's memory, and nothing here reads them.
	if err := informer.SetTransform(stripManagedFields); err != nil {
		return nil, nil, err
	}
	if err := informer.AddIndexers(cache.Indexers{byHolder: HolderIndex}); err != nil {
		return nil, nil, err
	}
	registration, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { observe(ctx, reservations, obj, false) },
		UpdateFunc: func(_, obj any) { observe(ctx, reservations, obj, false) },
		DeleteFunc: func(obj any) { observe(ctx, reservations, obj, true) },
	})
	if err != nil {
		return nil, nil, err
	}
	store := NewStore(client.NetworkingV1().IPAddresses(), indexedClaims{informer.GetIndexer()}, time.Now, Grace)
	factory.Start(ctx.Done())
	return store, registration.HasSynced, nil
}

func stripManagedFields(obj any) (any, error) {
	if ip, ok := obj.(*networkingv1.IPAddress); ok {
		ip.ManagedFields = nil
	}
	return obj, nil
}

func observe(ctx context.Context, reservations Reservations, obj any, gone bool) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	if ip, ok := obj.(*networkingv1.IPAddress); ok {
		Observe(ctx, reservations, ip, gone)
	}
}

// Observe keeps the reservation of a claimed address in step with one
// event of the claim: changed, or gone. The watch calls it for every
// event; fakes of the apiserver in tests do too.
func Observe(ctx context.Context, reservations Reservations, obj *networkingv1.IPAddress, gone bool) {
	if gone {
		if addr, err := netip.ParseAddr(obj.Name); err == nil {
			reservations.Reserve(ctx, addr.Unmap(), nil)
		}
		return
	}
	c, err := readClaim(obj)
	if err != nil {
		klog.FromContext(ctx).Error(err, "Ignoring a malformed address claim", "vip", obj.Name)
		return
	}
	reservations.Reserve(ctx, c.ip, c.reservation())
}

// RunCollector drops stale claim holders every collectInterval until ctx ends,
// once synced says the claims and the Services lookup reads are known.
func (s *Store) RunCollector(ctx context.Context, lookup Lookup, synced ...cache.InformerSynced) {
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return
	}
	ticker := time.NewTicker(collectInterval)
	defer ticker.Stop()
	for {
		if err := s.Collect(ctx, lookup); err != nil {
			klog.FromContext(ctx).Error(err, "Collecting stale address claims failed; retrying")
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
