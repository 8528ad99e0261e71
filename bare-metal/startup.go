package baremetal

import (
	"context"
	"fmt"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/claims"
	"github.com/heraldlb/herald/bare-metal/pools"
	"github.com/heraldlb/herald/provider"
)

// ErrStateNotRecovered is returned while the Services the allocation state
// is rebuilt from are not yet known: allocating before that could hand out
// an address a Service already has.
var ErrStateNotRecovered = fmt.Errorf("%w: address allocations not yet recovered from Service status", provider.ErrNotReady)

// phase is how far the backend's start-up has come. Only the start-up
// goroutine moves it, and only forward; everything else reads it.
type phase int32

const (
	// phaseDiscovering: asking the apiserver whether it serves IPAddress
	// (claims) and IPAddressPool. A Service's address may come from a pool
	// not loaded yet, and handing it out anew would renumber it.
	phaseDiscovering phase = iota
	// phaseSyncing: waiting until Services, Namespaces (pools select them
	// by label), pools and every other instance's claims are listed.
	phaseSyncing
	// phaseServing: allocations are rebuilt from Service status.
	phaseServing
)

func (p phase) String() string {
	switch p {
	case phaseDiscovering:
		return "discovering the IPAddress and IPAddressPool APIs"
	case phaseSyncing:
		return "listing Services, Namespaces, pools and claims"
	}
	return "serving"
}

// ready returns ErrStateNotRecovered, saying what start-up waits for,
// until the backend serves.
func (b *Backend) ready() error {
	if p := phase(b.phase.Load()); p != phaseServing {
		return fmt.Errorf("%w (%s)", ErrStateNotRecovered, p)
	}
	return nil
}

// Discovery intervals: soon after a failure; rarely while the CRD is
// absent, so installing it later needs no restart.
const (
	discoveryRetry   = 5 * time.Second
	crdAbsentRecheck = 30 * time.Second
)

// startUp brings the backend from phaseDiscovering to phaseServing: it
// starts the claim and pool watches the cluster serves, waits until they
// and the shared informers have listed everything, and recovers the
// allocations.
func (b *Backend) startUp(ctx context.Context) {
	synced := []cache.InformerSynced{b.env.ServicesSynced}
	if b.env.NamespacesSynced != nil {
		synced = append(synced, b.env.NamespacesSynced)
	}
	if b.env.RESTConfig != nil {
		more, ok := b.startWatches(ctx, b.env.RESTConfig)
		if !ok {
			return
		}
		synced = append(synced, more...)
	} else {
		// No cluster to watch (tests): the config's pools and whatever
		// claims the caller installed.
		if _, err := b.applyPools(ctx, nil); err != nil {
			klog.FromContext(ctx).Error(err, "Loading the cloud config's address pools failed")
			return
		}
		if b.claimsSynced != nil {
			synced = append(synced, b.claimsSynced)
		}
	}
	b.phase.Store(int32(phaseSyncing))
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return
	}
	b.recover(ctx)
	b.phase.Store(int32(phaseServing))
	b.allocationsChanged()
	// The Services deferred until now need not wait for their retry.
	b.env.Requeue.RequeuePending()
}

// startWatches starts the claim and pool watches the apiserver serves and
// returns what must have synced before the backend serves; false when ctx
// ended first or a watch could not start.
func (b *Backend) startWatches(ctx context.Context, config *rest.Config) ([]cache.InformerSynced, bool) {
	logger := klog.FromContext(ctx)
	claimsServed, poolsServed, ok := discover(ctx, config)
	if !ok {
		return nil, false
	}
	var synced []cache.InformerSynced
	if claimsServed {
		claimsSynced, err := b.watchClaims(ctx, config)
		if err != nil {
			logger.Error(err, "Not serving: the address claim watch did not start")
			return nil, false
		}
		synced = append(synced, claimsSynced)
	} else {
		logger.Error(nil, "networking.k8s.io/v1 IPAddress is not served (Kubernetes < 1.33?): running without address claims; two herald-ccm instances running at once could give one address to two Services")
	}
	if !poolsServed {
		logger.Info("IPAddressPool CRD not installed; using the cloud config's pools until it is")
		if _, err := b.applyPools(ctx, nil); err != nil {
			logger.Error(err, "Not serving: the cloud config's address pools were refused")
			return nil, false
		}
		go b.waitForPoolCRD(ctx, config)
		return synced, true
	}
	loaded, err := b.watchPools(ctx, config)
	if err != nil {
		logger.Error(err, "Not serving: the IPAddressPool watch did not start")
		return nil, false
	}
	return append(synced, loaded), true
}

// discover asks until the apiserver answers whether it serves IPAddress
// and IPAddressPool; false when ctx ended first.
func discover(ctx context.Context, config *rest.Config) (claimsServed, poolsServed, ok bool) {
	for {
		claimsServed, err := served(config, networkingv1.SchemeGroupVersion, "ipaddresses")
		if err == nil {
			poolsServed, err = served(config, v1alpha1.SchemeGroupVersion, pools.Resource.Resource)
		}
		if err == nil {
			return claimsServed, poolsServed, true
		}
		klog.FromContext(ctx).Error(err, "Discovering the IPAddress and IPAddressPool APIs failed; retrying")
		select {
		case <-ctx.Done():
			return false, false, false
		case <-time.After(discoveryRetry):
		}
	}
}

// watchClaims starts the claim watch; allocations wait until it has
// synced: the allocator must know what other instances hold.
func (b *Backend) watchClaims(ctx context.Context, config *rest.Config) (cache.InformerSynced, error) {
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	store, synced, err := claims.Watch(ctx, client, reservations{b})
	if err != nil {
		return nil, fmt.Errorf("starting the address claim informer: %w", err)
	}
	b.claims, b.claimsSynced, b.services = store, synced, client.CoreV1()
	go store.RunCollector(ctx, b.viewOf, synced, b.env.ServicesSynced)
	return synced, nil
}

// watchPools starts the IPAddressPool controller and returns whether it
// has loaded the pools once.
func (b *Backend) watchPools(ctx context.Context, config *rest.Config) (cache.InformerSynced, error) {
	client, err := dynamic.NewForConfig(config)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	c, err := pools.Start(ctx, client, poolTarget{b})
	if err != nil {
		return nil, fmt.Errorf("starting the IPAddressPool controller: %w", err)
	}
	b.pools.Store(c)
	return c.Loaded, nil
}

// waitForPoolCRD starts the pool controller once the CRD is installed.
func (b *Backend) waitForPoolCRD(ctx context.Context, config *rest.Config) {
	logger := klog.FromContext(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(crdAbsentRecheck):
		}
		ok, err := served(config, v1alpha1.SchemeGroupVersion, pools.Resource.Resource)
		if err == nil && ok {
			_, err = b.watchPools(ctx, config)
			if err == nil {
				logger.Info("IPAddressPool CRD installed; watching IPAddressPools")
				return
			}
		}
		if err != nil {
			logger.Error(err, "Checking for the IPAddressPool CRD failed; retrying")
		}
	}
}

// served asks discovery whether the apiserver serves resource in gv; an
// unknown group version is "no", not an error.
func served(config *rest.Config, gv schema.GroupVersion, resource string) (bool, error) {
	disco, err := discovery.NewDiscoveryClientForConfig(config)
	if err != nil {
		return false, fmt.Errorf("discovery client: %w", err)
	}
	resources, err := disco.ServerResourcesForGroupVersion(gv.String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discovering %s: %w", gv, err)
	}
	for _, r := range resources.APIResources {
		if r.Name == resource {
			return true, nil
		}
	}
	return false, nil
}
