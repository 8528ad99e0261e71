package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/provider/service"
)

// ClassFinalizer guards the load balancers of Services that name herald's
// class. It differs from the upstream service controller's finalizer so
// that controller never mistakes these Services for its own.
const ClassFinalizer = "herald.dev/load-balancer-cleanup"

// ClassControllerName is the name under --controllers.
const ClassControllerName = "herald-class-controller"

// ClassController provides load balancers for Services with
// spec.loadBalancerClass herald.dev/bare-metal, which the upstream service
// controller ignores by design. It reuses the provider's LoadBalancer, so
// validation, events and conditions are the same for both kinds.
type ClassController struct {
	lb       *Provider
	client   kubernetes.Interface
	services corelisters.ServiceLister
	nodes    corelisters.NodeLister
	synced   []cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]
}

// NewClassController wires the controller to the shared informers.
func NewClassController(lb *Provider, client kubernetes.Interface, services coreinformers.ServiceInformer, nodes coreinformers.NodeInformer) (*ClassController, error) {
	c := &ClassController{
		lb: lb, client: client,
		services: services.Lister(), nodes: nodes.Lister(),
		synced: []cache.InformerSynced{services.Informer().HasSynced, nodes.Informer().HasSynced},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 5*time.Minute),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: ClassControllerName}),
	}
	enqueue := func(obj any) {
		if svc, ok := obj.(*v1.Service); ok && isClassed(svc) || ok && slices.Contains(svc.Finalizers, ClassFinalizer) {
			if key, err := cache.MetaNamespaceKeyFunc(svc); err == nil {
				c.queue.Add(key)
			}
		}
	}
	_, err := services.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	})
	return c, err
}

func isClassed(svc *v1.Service) bool {
	return svc.Spec.LoadBalancerClass != nil && *svc.Spec.LoadBalancerClass == service.Class
}

// Run processes Services until ctx ends.
func (c *ClassController) Run(ctx context.Context, workers int) {
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	for range workers {
		go wait.UntilWithContext(ctx, func(ctx context.Context) {
			for c.next(ctx) {
			}
		}, time.Second)
	}
	<-ctx.Done()
}

func (c *ClassController) next(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	if err := c.sync(ctx, key); err != nil {
		klog.FromContext(ctx).Error(err, "Syncing load balancer failed; retrying", "service", key)
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

func (c *ClassController) sync(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil //nolint:nilerr // a malformed key never becomes valid
	}
	svc, err := c.services.Services(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return nil // gone after our finalizer was removed: nothing is left
	}
	if err != nil {
		return err
	}
	wants := isClassed(svc) && svc.Spec.Type == v1.ServiceTypeLoadBalancer && svc.DeletionTimestamp == nil
	if !wants {
		if !slices.Contains(svc.Finalizers, ClassFinalizer) {
			return nil
		}
		if err := c.lb.EnsureLoadBalancerDeleted(ctx, "", svc); err != nil {
			return err
		}
		if err := c.patchStatus(ctx, svc, &v1.LoadBalancerStatus{}); err != nil {
			return err
		}
		return c.patchFinalizers(ctx, svc, slices.DeleteFunc(slices.Clone(svc.Finalizers), func(f string) bool { return f == ClassFinalizer }))
	}
	if !slices.Contains(svc.Finalizers, ClassFinalizer) {
		// The finalizer first: an address handed out before it is in place
		// could outlive a Service deleted in between.
		return c.patchFinalizers(ctx, svc, append(slices.Clone(svc.Finalizers), ClassFinalizer))
	}
	nodes, err := c.eligibleNodes()
	if err != nil {
		return err
	}
	status, err := c.lb.EnsureLoadBalancer(ctx, "", svc, nodes)
	if err != nil {
		return err
	}
	return c.patchStatus(ctx, svc, status)
}

// eligibleNodes mirrors the upstream controller: nodes labelled to be
// excluded from external load balancers are left out.
func (c *ClassController) eligibleNodes() ([]*v1.Node, error) {
	all, err := c.nodes.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(n *v1.Node) bool {
		_, excluded := n.Labels[v1.LabelNodeExcludeBalancers]
		return excluded
	}), nil
}

// patchFinalizers sets the finalizer list with the resourceVersion as a
// precondition, so a concurrent change is retried rather than overwritten.
func (c *ClassController) patchFinalizers(ctx context.Context, svc *v1.Service, finalizers []string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"finalizers": finalizers, "resourceVersion": svc.ResourceVersion}})
	if err != nil {
		return err
	}
	_, err = c.client.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("setting finalizers: %w", err)
	}
	return nil
}

// patchStatus writes status.loadBalancer only when it changed, so
// re-syncs and restarts cost no writes.
func (c *ClassController) patchStatus(ctx context.Context, svc *v1.Service, status *v1.LoadBalancerStatus) error {
	if apiequality.Semantic.DeepEqual(svc.Status.LoadBalancer, *status) {
		return nil
	}
	// No resourceVersion precondition: herald's own condition write may
	// have just moved it, and this field is herald's alone.
	var loadBalancer any = status
	if len(status.Ingress) == 0 {
		loadBalancer = map[string]any{"ingress": nil} // a merge patch deletes only with null
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"loadBalancer": loadBalancer}})
	if err != nil {
		return err
	}
	_, err = c.client.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		return fmt.Errorf("writing status.loadBalancer: %w", err)
	}
	return nil
}
