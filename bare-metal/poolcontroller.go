package baremetal

import (
	"context"
	"fmt"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
)

// poolResource is the IPAddressPool resource.
var poolResource = v1alpha1.SchemeGroupVersion.WithResource("ipaddresspools")

// poolsKey is the single work item: every change re-reads all pools, since
// overlaps make one pool's status depend on the others.
const poolsKey = "pools"

// statusRefreshDelay batches the usage updates that allocations cause, so
// a burst of new Services costs one status write per pool, not one each.
const statusRefreshDelay = time.Second

// poolController feeds IPAddressPool objects to the allocator and reports
// each pool's usage and problems in its status.
type poolController struct {
	backend *Backend
	client  dynamic.NamespaceableResourceInterface
	lister  cache.GenericLister
	synced  cache.InformerSynced
	queue   workqueue.TypedRateLimitingInterface[string]
	now     func() time.Time
}

// Discovery intervals: soon after a failure; rarely while the CRD is
// absent, so installing it later needs no restart.
const (
	discoveryRetry   = 5 * time.Second
	crdAbsentRecheck = 30 * time.Second
)

// watchForPools starts the pool controller once the IPAddressPool CRD is
// served. Until discovery first answers, allocations wait: a Service's
// address may come from a pool not loaded yet, and handing it out anew
// would renumber it. Without the CRD the cloud config's pools are all
// there is, a supported set-up.
func (b *Backend) watchForPools(ctx context.Context, config *rest.Config) {
	logger := klog.FromContext(ctx)
	for {
		delay := crdAbsentRecheck
		served, err := poolsServed(config)
		switch {
		case err != nil:
			logger.Error(err, "Discovering the IPAddressPool API failed; retrying")
			delay = discoveryRetry
		case served:
			pools, err := startPoolController(ctx, b, config)
			if err == nil {
				b.mu.Lock()
				b.pools = pools
				b.mu.Unlock()
				return
			}
			logger.Error(err, "Starting the IPAddressPool controller failed; retrying")
			delay = discoveryRetry
		default:
			b.mu.Lock()
			if !b.poolsSet {
				logger.Info("IPAddressPool CRD not installed; using the cloud config's pools until it is")
			}
			b.poolsSet = true
			b.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

func poolsServed(config *rest.Config) (bool, error) {
	return served(config, v1alpha1.SchemeGroupVersion, poolResource.Resource)
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
	return hasResource(resources, resource), nil
}

// startPoolController watches IPAddressPools.
func startPoolController(ctx context.Context, b *Backend, config *rest.Config) (*poolController, error) {
	client, err := dynamic.NewForConfig(config)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	factory := dynamicinformer.NewDynamicSharedInformerFactory(client, 0)
	informer := factory.ForResource(poolResource)
	c := &poolController{
		backend: b,
		client:  client.Resource(poolResource),
		lister:  informer.Lister(),
		synced:  informer.Informer().HasSynced,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "ipaddresspools"}),
		now: time.Now,
	}
	enqueue := func(any) { c.queue.Add(poolsKey) }
	if _, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) }, DeleteFunc: enqueue,
	}); err != nil {
		return nil, err
	}
	factory.Start(ctx.Done())
	go c.run(ctx)
	return c, nil
}

func hasResource(list *metav1.APIResourceList, name string) bool {
	for _, r := range list.APIResources {
		if r.Name == name {
			return true
		}
	}
	return false
}

// refresh asks for the pools' status to be brought up to date soon.
func (c *poolController) refresh() { c.queue.AddAfter(poolsKey, statusRefreshDelay) }

func (c *poolController) run(ctx context.Context) {
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) {
		return
	}
	c.queue.Add(poolsKey)
	go func() {
		for c.next(ctx) {
		}
	}()
	<-ctx.Done()
}

func (c *poolController) next(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	if err := c.sync(ctx); err != nil {
		klog.FromContext(ctx).Error(err, "Syncing address pools failed; retrying")
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

// sync hands the current pools to the allocator, then writes each pool's
// status where it changed.
func (c *poolController) sync(ctx context.Context) error {
	objects, err := c.list()
	if err != nil {
		return err
	}
	set, conflicts, usage, err := c.backend.setPools(ctx, objects)
	if err != nil {
		return err
	}
	now := metav1.NewTime(c.now())
	var errs []error
	for _, obj := range objects {
		status := poolStatus(obj, set, conflicts, usage, now)
		if apiequality.Semantic.DeepEqual(stripTimes(status), stripTimes(obj.Status)) {
			continue
		}
		obj = obj.DeepCopy()
		obj.Status = status
		if err := c.updateStatus(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("pool %s: %w", obj.Name, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("writing pool status: %v", errs)
	}
	return nil
}

func (c *poolController) list() ([]*v1alpha1.IPAddressPool, error) {
	items, err := c.lister.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	pools := make([]*v1alpha1.IPAddressPool, 0, len(items))
	for _, item := range items {
		u, ok := item.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		pool := &v1alpha1.IPAddressPool{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, pool); err != nil {
			return nil, fmt.Errorf("decoding IPAddressPool %s: %w", u.GetName(), err)
		}
		pools = append(pools, pool)
	}
	return pools, nil
}

func (c *poolController) updateStatus(ctx context.Context, pool *v1alpha1.IPAddressPool) error {
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(pool)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: content}
	u.SetGroupVersionKind(schema.GroupVersionKind{Group: v1alpha1.GroupName, Version: "v1alpha1", Kind: "IPAddressPool"})
	_, err = c.client.UpdateStatus(ctx, u, metav1.UpdateOptions{FieldManager: "herald-ccm"})
	return err
}

// stripTimes drops transition times so a status that differs only in them
// is not rewritten.
func stripTimes(s v1alpha1.IPAddressPoolStatus) v1alpha1.IPAddressPoolStatus {
	s.Conditions = append([]metav1.Condition(nil), s.Conditions...)
	for i := range s.Conditions {
		s.Conditions[i].LastTransitionTime = metav1.Time{}
	}
	return s
}
