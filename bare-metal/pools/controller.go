package pools

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
)

// Resource is the IPAddressPool resource.
var Resource = v1alpha1.SchemeGroupVersion.WithResource("ipaddresspools")

// poolsKey is the single work item: every change re-reads all pools, since
// overlaps make one pool's status depend on the others.
const poolsKey = "pools"

// statusRefreshDelay batches the usage updates that allocations cause, so
// a burst of new Services costs one status write per pool, not one each.
const statusRefreshDelay = time.Second

// Target is what the controller feeds pools to: the bare-metal backend.
type Target interface {
	// ApplyPools gives the allocator the valid pools among objects and
	// reports what it made of them.
	ApplyPools(ctx context.Context, objects []*v1alpha1.IPAddressPool) (Report, error)
	// Serving reports whether the allocations are recovered: until then
	// usage counts would show every pool empty, so no status is written.
	Serving() bool
}

// Controller feeds IPAddressPool objects to its Target and reports each
// pool's usage and problems in its status.
type Controller struct {
	target Target
	client dynamic.NamespaceableResourceInterface
	lister cache.GenericLister
	synced cache.InformerSynced
	queue  workqueue.TypedRateLimitingInterface[string]
	now    func() time.Time
	loaded atomic.Bool
}

// Start watches IPAddressPools and feeds them to target until ctx ends.
// The caller checks that the CRD is served.
func Start(ctx context.Context, client dynamic.Interface, target Target) (*Controller, error) {
	factory := dynamicinformer.NewDynamicSharedInformerFactory(client, 0)
	informer := factory.ForResource(Resource)
	c := &Controller{
		target: target,
		client: client.Resource(Resource),
		lister: informer.Lister(),
		synced: informer.Informer().HasSynced,
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

// Loaded reports whether the target has been given the pools once: until
// then a Service's address may come from a pool it does not know yet.
func (c *Controller) Loaded() bool { return c.loaded.Load() }

// Refresh asks for the pools' status to be brought up to date soon.
func (c *Controller) Refresh() { c.queue.AddAfter(poolsKey, statusRefreshDelay) }

func (c *Controller) run(ctx context.Context) {
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) {
		return
	}
	c.queue.Add(poolsKey)
	go c.work(ctx)
	<-ctx.Done()
}

// work syncs the pools each time they are queued, until the queue shuts
// down. There is one key, so one worker.
func (c *Controller) work(ctx context.Context) {
	for {
		key, quit := c.queue.Get()
		if quit {
			return
		}
		c.finish(ctx, key, c.sync(ctx))
	}
}

// finish retries a failed sync later, or forgets the failures of key.
func (c *Controller) finish(ctx context.Context, key string, err error) {
	defer c.queue.Done(key)
	switch {
	case err == nil:
		c.queue.Forget(key)
		return
	case apierrors.IsConflict(err):
		// A pool changed while its status was computed: routine.
		klog.FromContext(ctx).V(4).Info("Pool status write conflicted; retrying", "err", err)
	default:
		klog.FromContext(ctx).Error(err, "Syncing address pools failed; retrying")
	}
	c.queue.AddRateLimited(key)
}

// sync hands the current pools to the target, then writes each pool's
// status where it changed.
func (c *Controller) sync(ctx context.Context) error {
	objects, err := c.list()
	if err != nil {
		return err
	}
	report, err := c.target.ApplyPools(ctx, objects)
	if err != nil {
		return err
	}
	c.loaded.Store(true)
	if !c.target.Serving() {
		return nil
	}
	now := metav1.NewTime(c.now())
	var errs []error
	for _, obj := range objects {
		status := Status(obj, report, now)
		if apiequality.Semantic.DeepEqual(stripTimes(status), stripTimes(obj.Status)) {
			continue
		}
		obj = obj.DeepCopy()
		obj.Status = status
		if err := c.updateStatus(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("pool %s: %w", obj.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("writing pool status: %w", err)
	}
	return nil
}

func (c *Controller) list() ([]*v1alpha1.IPAddressPool, error) {
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

func (c *Controller) updateStatus(ctx context.Context, pool *v1alpha1.IPAddressPool) error {
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(pool)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: content}
	u.SetGroupVersionKind(v1alpha1.SchemeGroupVersion.WithKind("IPAddressPool"))
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
