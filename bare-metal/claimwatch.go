package baremetal

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/ipam"
	"github.com/heraldlb/herald/provider"
)

// claimsByHolder indexes claims by the Services holding them.
const claimsByHolder = "holder"

func holderIndex(obj any) ([]string, error) {
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

// indexedClaims is the claimCache over the informer's indexer.
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
	objs, _ := i.indexer.ByIndex(claimsByHolder, service)
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

// watchClaims starts the claim informer once discovery says the
// IPAddress API is served (Kubernetes 1.33 and later). Allocations wait
// until it has synced: the allocator must know what other instances hold.
// Without the API herald runs without claims, as before them, and says so.
func (b *Backend) watchClaims(ctx context.Context, config *rest.Config) {
	logger := klog.FromContext(ctx)
	for {
		served, err := ipAddressesServed(config)
		if err == nil && !served {
			logger.Error(nil, "networking.k8s.io/v1 IPAddress is not served (Kubernetes < 1.33?): running without address claims; two herald-ccm instances running at once could give one address to two Services")
			b.setClaims(nil, nil)
			return
		}
		if err == nil {
			err = b.startClaims(ctx, config)
			if err == nil {
				return
			}
		}
		logger.Error(err, "Starting the address claim informer failed; retrying")
		select {
		case <-ctx.Done():
			return
		case <-time.After(discoveryRetry):
		}
	}
}

func ipAddressesServed(config *rest.Config) (bool, error) {
	return served(config, networkingv1.SchemeGroupVersion, "ipaddresses")
}

func (b *Backend) startClaims(ctx context.Context, config *rest.Config) error {
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	// Only herald's claims: ClusterIPs' IPAddresses are met, if a pool
	// overlaps the service CIDR, as a failed create.
	selector := labels.SelectorFromSet(labels.Set{networkingv1.LabelManagedBy: ClaimManager}).String()
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	informer := factory.Networking().V1().IPAddresses().Informer()
	// One claim per Service: at thousands of Services, managedFields
	// would be most of the cache's memory, and nothing here reads them.
	if err := informer.SetTransform(provider.StripManagedFields); err != nil {
		return err
	}
	if err := informer.AddIndexers(cache.Indexers{claimsByHolder: holderIndex}); err != nil {
		return err
	}
	registration, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { b.claimChanged(ctx, obj) },
		UpdateFunc: func(_, obj any) { b.claimChanged(ctx, obj) },
		DeleteFunc: func(obj any) { b.claimDeleted(obj) },
	})
	if err != nil {
		return err
	}
	store := &claimStore{api: client.NetworkingV1().IPAddresses(), cache: indexedClaims{informer.GetIndexer()},
		now: time.Now, grace: claimGrace}
	// The handler's sync, not just the store's: every existing claim must
	// be reserved in the allocator before recovery restores anything.
	b.setClaims(store, registration.HasSynced)
	factory.Start(ctx.Done())
	go b.collectClaims(ctx, registration.HasSynced)
	return nil
}

// claimChanged keeps the allocator's reservation of a claimed address in
// step with the claim.
func (b *Backend) claimChanged(ctx context.Context, obj any) {
	ip, ok := obj.(*networkingv1.IPAddress)
	if !ok {
		return
	}
	c, err := readClaim(ip)
	if err != nil {
		klog.FromContext(ctx).Error(err, "Ignoring a malformed address claim", "vip", ip.Name)
		return
	}
	b.reserve(ctx, c.ip, c.reservation())
}

func (b *Backend) claimDeleted(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	ip, ok := obj.(*networkingv1.IPAddress)
	if !ok {
		return
	}
	if addr, err := netip.ParseAddr(ip.Name); err == nil {
		b.alloc.Unreserve(addr.Unmap())
	}
}

// reserve records holders of ip in the allocator; none means free.
func (b *Backend) reserve(ctx context.Context, ip netip.Addr, holders []ipam.Request) {
	if len(holders) == 0 {
		b.alloc.Unreserve(ip)
		return
	}
	if err := b.alloc.Reserve(ip, holders); err != nil {
		klog.FromContext(ctx).Error(err, "Ignoring a malformed address claim", "vip", ip)
	}
}

// collectClaims drops stale claim holders every claimGCInterval, once the
// claims and Services are known.
func (b *Backend) collectClaims(ctx context.Context, synced cache.InformerSynced) {
	if !cache.WaitForCacheSync(ctx.Done(), synced, b.servicesSynced) {
		return
	}
	ticker := time.NewTicker(claimGCInterval)
	defer ticker.Stop()
	for {
		b.mu.Lock()
		store := b.claims
		b.mu.Unlock()
		if err := store.collect(ctx, b.viewOf); err != nil {
			klog.FromContext(ctx).Error(err, "Collecting stale address claims failed; retrying")
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
