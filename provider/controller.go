package provider

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/cloud-provider/names"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/provider/service"
)

// Controller names under --controllers. Services without a class are
// served under upstream's name for its service controller, which herald's
// replaces, so flags written for it keep working.
const (
	ClasslessControllerName = names.ServiceLBController
	ClassControllerName     = "herald-class-controller"
)

// Finalizers guarding load balancers. Services without a class carry the
// upstream service controller's, which Services served by earlier herald
// versions already have; Services of herald's class carry herald's own.
const (
	LoadBalancerFinalizer = "service.kubernetes.io/load-balancer-cleanup"
	ClassFinalizer        = "herald.dev/load-balancer-cleanup"
)

// Scope says which LoadBalancer Services a controller serves.
type Scope int

const (
	// Classless Services have no spec.loadBalancerClass.
	Classless Scope = iota
	// Classed Services have spec.loadBalancerClass herald.dev/bare-metal.
	Classed
)

func (s Scope) finalizer() string {
	if s == Classed {
		return ClassFinalizer
	}
	return LoadBalancerFinalizer
}

func (s Scope) matches(svc *v1.Service) bool {
	if s == Classed {
		return svc.Spec.LoadBalancerClass != nil && *svc.Spec.LoadBalancerClass == service.Class
	}
	return svc.Spec.LoadBalancerClass == nil
}

// nodesKey is the work item for a change of the eligible nodes; no
// Service's key is empty.
const nodesKey = ""

// Retry delays of a failed sync, doubling up to retryMax. A user's mistake
// (an annotation, an exhausted pool) is retried more slowly than herald's
// own failures: an edit of the Service syncs it anyway, and a freed address
// or a changed pool requeues it at once (Requeuer), so retries are only
// the fallback.
const (
	retryFirst     = time.Second
	userRetryFirst = 5 * time.Second
	retryMax       = 5 * time.Minute
)

// ServiceController provides load balancers for the LoadBalancer Services
// of its scope through the provider's backend: finalizer, status,
// annotations, events and the backend's condition.
type ServiceController struct {
	name     string
	scope    Scope
	lb       *Provider
	client   kubernetes.Interface
	services corelisters.ServiceLister
	nodes    corelisters.NodeLister
	synced   []cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]
	// userRetry paces the retries of user errors; the queue's own rate
	// limiter, the others.
	userRetry workqueue.TypedRateLimiter[string]

	mu sync.Mutex
	// states is the outcome of each Service's last sync: stateReady or
	// statePending (failed or deferred); herald_services counts them.
	states map[string]string
	// reported is the warning last reported for a Service, so that a
	// failure repeated at each retry is announced once.
	reported map[string]string
	// nodeSet identifies the eligible nodes at the last node sync.
	nodeSet string
}

// NewServiceController wires a controller of scope to the shared informers.
func NewServiceController(lb *Provider, client kubernetes.Interface, scope Scope, services coreinformers.ServiceInformer,
	nodes coreinformers.NodeInformer, namespaces coreinformers.NamespaceInformer) (*ServiceController, error) {
	name := ClasslessControllerName
	if scope == Classed {
		name = ClassControllerName
	}
	c := &ServiceController{
		name: name, scope: scope, lb: lb, client: client,
		services: services.Lister(), nodes: nodes.Lister(),
		synced: []cache.InformerSynced{services.Informer().HasSynced, nodes.Informer().HasSynced},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](retryFirst, retryMax),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: name}),
		userRetry: workqueue.NewTypedItemExponentialFailureRateLimiter[string](userRetryFirst, retryMax),
		states:    map[string]string{},
		reported:  map[string]string{},
	}
	if _, err := services.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, obj any) { c.enqueue(obj) },
		DeleteFunc: c.gone,
	}); err != nil {
		return nil, err
	}
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { c.queue.Add(nodesKey) },
		UpdateFunc: func(old, obj any) {
			if nodeChanged(old, obj) {
				c.queue.Add(nodesKey)
			}
		},
		DeleteFunc: func(any) { c.queue.Add(nodesKey) },
	}); err != nil {
		return nil, err
	}
	// Pools may select Namespaces by label: a relabelled Namespace may let
	// its waiting Services have an address.
	_, err := namespaces.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(old, obj any) {
			before, ok1 := old.(*v1.Namespace)
			after, ok2 := obj.(*v1.Namespace)
			if ok1 && ok2 && !maps.Equal(before.Labels, after.Labels) {
				c.requeuePendingIn(after.Name)
			}
		},
	})
	return c, err
}

// concerns reports whether the controller serves svc or must clean up
// after it.
func (c *ServiceController) concerns(svc *v1.Service) bool {
	return c.scope.matches(svc) || slices.Contains(svc.Finalizers, c.scope.finalizer())
}

// serves reports whether svc should have a load balancer from us.
func (c *ServiceController) serves(svc *v1.Service) bool {
	return svc.Spec.Type == v1.ServiceTypeLoadBalancer && c.scope.matches(svc) && svc.DeletionTimestamp == nil
}

func (c *ServiceController) enqueue(obj any) {
	svc, ok := obj.(*v1.Service)
	if !ok || !c.concerns(svc) {
		return
	}
	if key, err := cache.MetaNamespaceKeyFunc(svc); err == nil {
		c.queue.Add(key)
	}
}

// gone forgets what the controller kept about a deleted Service.
func (c *ServiceController) gone(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		c.forget(key)
	}
}

func (c *ServiceController) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setState(key, "")
	delete(c.reported, key)
}

// setState records the outcome of key's last sync ("": none, the Service
// is not ours) and keeps herald_services in step. c.mu is held.
func (c *ServiceController) setState(key, state string) {
	old := c.states[key]
	if old == state {
		return
	}
	if old != "" {
		c.lb.metrics.services.WithLabelValues(c.name, old).Dec()
	}
	if state == "" {
		delete(c.states, key)
		return
	}
	c.states[key] = state
	c.lb.metrics.services.WithLabelValues(c.name, state).Inc()
}

// Run processes Services until ctx ends.
func (c *ServiceController) Run(ctx context.Context, workers int) {
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	// Every Service is synced at start, nodes and all: only later node
	// changes need a node sync.
	if nodes, err := c.eligibleNodes(); err == nil {
		c.nodeSet = nodeSetKey(nodes)
	}
	c.lb.register(c)
	for _, state := range []string{stateReady, statePending} {
		c.lb.metrics.services.WithLabelValues(c.name, state).Add(0) // shown from the start
	}
	for range workers {
		go wait.UntilWithContext(ctx, func(ctx context.Context) {
			for c.next(ctx) {
			}
		}, time.Second)
	}
	<-ctx.Done()
}

func (c *ServiceController) next(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	var err error
	if key == nodesKey {
		err = c.syncNodes(ctx)
	} else {
		err = c.sync(klog.NewContext(ctx, klog.FromContext(ctx).WithValues("service", key)), key)
	}
	if err != nil {
		logRetry(klog.FromContext(ctx), key, err)
		c.retry(key, err)
		return true
	}
	c.queue.Forget(key)
	c.userRetry.Forget(key)
	return true
}

func (c *ServiceController) retry(key string, err error) {
	if userError(err) {
		c.queue.AddAfter(key, c.userRetry.When(key))
		return
	}
	c.queue.AddRateLimited(key)
}

// logRetry logs a failed sync at the level it deserves: a user's mistake
// or a start-up still under way is not an error of herald's, and a
// conflict is routine between controllers.
func logRetry(logger klog.Logger, key string, err error) {
	switch {
	case errors.Is(err, ErrNotReady), apierrors.IsConflict(err):
		logger.V(4).Info("Sync retried", "service", key, "err", err)
	case userError(err):
		logger.V(4).Info("Load balancer not provided; retrying", "service", key, "reason", reasonOf(err), "err", err)
	default:
		logger.Error(err, "Syncing load balancer failed; retrying", "service", key)
	}
}

func (c *ServiceController) sync(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil //nolint:nilerr // a malformed key never becomes valid
	}
	svc, err := c.services.Services(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		c.forget(key)
		return nil // gone after our finalizer was removed: nothing is left
	}
	if err != nil {
		return err
	}
	if !c.serves(svc) {
		if !slices.Contains(svc.Finalizers, c.scope.finalizer()) {
			c.forget(key)
			return nil
		}
		return c.cleanUp(ctx, svc)
	}
	if !slices.Contains(svc.Finalizers, c.scope.finalizer()) {
		// The finalizer first: an address handed out before it is in place
		// could outlive a Service deleted in between.
		return c.patchFinalizers(ctx, svc, append(slices.Clone(svc.Finalizers), c.scope.finalizer()), nil)
	}
	nodes, err := c.eligibleNodes()
	if err != nil {
		return err
	}
	result, err := c.lb.ensure(ctx, svc, nodes)
	if err != nil {
		return c.failed(ctx, svc, key, err)
	}
	return c.succeeded(ctx, svc, key, result)
}

// succeeded shows result on the Service: the annotations first, so that
// whoever sees the status sees them, then status and condition together.
func (c *ServiceController) succeeded(ctx context.Context, svc *v1.Service, key string, result *Result) error {
	if err := c.writeAnnotations(ctx, svc, result.Annotations); err != nil {
		return err
	}
	reason, message := ReasonEnsured, "load balancer ready at "+ingressString(result.Status)
	if w := result.Warning; w != nil {
		reason, message = w.Reason, sanitize(w.Message)
	}
	if err := c.writeStatus(ctx, svc, result.Status, c.condition(svc, true, reason, message)); err != nil {
		return err
	}
	c.mu.Lock()
	c.setState(key, stateReady)
	if result.Warning == nil {
		delete(c.reported, key)
	}
	c.mu.Unlock()
	if result.Warning != nil {
		c.warn(ctx, svc, key, reason, message)
	}
	return nil
}

// failed reports err on the Service, once per distinct failure: a Warning
// event and a False condition. "Not ready yet" is not reported: writing it
// would be churn on every restart.
func (c *ServiceController) failed(ctx context.Context, svc *v1.Service, key string, err error) error {
	c.mu.Lock()
	c.setState(key, statePending)
	c.mu.Unlock()
	if errors.Is(err, ErrNotReady) {
		return err
	}
	reason, message := reasonOf(err), sanitize(err.Error())
	c.warn(ctx, svc, key, reason, message)
	if werr := c.writeStatus(ctx, svc, nil, c.condition(svc, false, reason, message)); werr != nil {
		return errors.Join(err, werr)
	}
	return err
}

// warn records a Warning event unless the same one was the last reported
// for the Service by this process.
func (c *ServiceController) warn(ctx context.Context, svc *v1.Service, key, reason, message string) {
	c.mu.Lock()
	repeated := c.reported[key] == reason+"\n"+message
	c.reported[key] = reason + "\n" + message
	c.mu.Unlock()
	if repeated {
		return
	}
	klog.FromContext(ctx).Info("Load balancer problem reported on the Service", "reason", reason, "message", message)
	c.lb.recorder.Event(svc, v1.EventTypeWarning, reason, message)
}

// cleanUp releases the load balancer of a Service we no longer serve and
// takes back everything herald wrote on it: status, condition,
// annotations, and last the finalizer.
func (c *ServiceController) cleanUp(ctx context.Context, svc *v1.Service) error {
	if err := c.lb.remove(ctx, svc); err != nil {
		return err
	}
	if err := c.clearStatus(ctx, svc); err != nil {
		return err
	}
	finalizers := slices.DeleteFunc(slices.Clone(svc.Finalizers), func(f string) bool { return f == c.scope.finalizer() })
	return c.patchFinalizers(ctx, svc, finalizers, c.lb.backend.AnnotationKeys())
}

// eligibleNodes mirrors the upstream controller: nodes labelled to be
// excluded from external load balancers are left out. The list is built
// per sync and not kept: a copy per Service is what made upstream's
// controller grow with Services times Nodes.
func (c *ServiceController) eligibleNodes() ([]*v1.Node, error) {
	all, err := c.nodes.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(n *v1.Node) bool {
		_, excluded := n.Labels[v1.LabelNodeExcludeBalancers]
		return excluded
	}), nil
}

// syncNodes moves every load balancer of the scope to the eligible nodes
// when they changed since the last node sync.
func (c *ServiceController) syncNodes(ctx context.Context) error {
	nodes, err := c.eligibleNodes()
	if err != nil {
		return err
	}
	set := nodeSetKey(nodes)
	c.mu.Lock()
	changed := set != c.nodeSet
	c.nodeSet = set
	c.mu.Unlock()
	if !changed {
		return nil
	}
	services, err := c.services.List(labels.Everything())
	if err != nil {
		return err
	}
	for _, svc := range services {
		if !c.serves(svc) || len(svc.Status.LoadBalancer.Ingress) == 0 {
			continue
		}
		key, _ := cache.MetaNamespaceKeyFunc(svc)
		if err := c.lb.updateNodes(ctx, svc, nodes); err != nil {
			logRetry(klog.FromContext(ctx), key, err)
			c.retry(key, err) // its next sync ensures it with the nodes of the day
		}
	}
	return nil
}

// nodeSetKey identifies nodes by what load balancers use of them: names
// and addresses.
func nodeSetKey(nodes []*v1.Node) string {
	parts := make([]string, 0, len(nodes))
	for _, n := range nodes {
		part := n.Name
		for _, a := range n.Status.Addresses {
			part += " " + string(a.Type) + "=" + a.Address
		}
		parts = append(parts, part)
	}
	slices.Sort(parts)
	return strings.Join(parts, ";")
}

// nodeChanged reports whether an update touched what decides a node's
// part in load balancers: the exclusion label and its addresses.
func nodeChanged(old, obj any) bool {
	before, ok1 := old.(*v1.Node)
	after, ok2 := obj.(*v1.Node)
	if !ok1 || !ok2 {
		return true
	}
	_, wasExcluded := before.Labels[v1.LabelNodeExcludeBalancers]
	_, excluded := after.Labels[v1.LabelNodeExcludeBalancers]
	return wasExcluded != excluded || !slices.Equal(before.Status.Addresses, after.Status.Addresses)
}

// requeuePending syncs the pending Services now.
func (c *ServiceController) requeuePending() { c.requeuePendingIn("") }

// requeuePendingIn syncs the pending Services of namespace ("": all) now.
func (c *ServiceController) requeuePendingIn(namespace string) {
	c.mu.Lock()
	var keys []string
	for key, state := range c.states {
		if state == statePending && (namespace == "" || strings.HasPrefix(key, namespace+"/")) {
			keys = append(keys, key)
		}
	}
	c.mu.Unlock()
	for _, key := range keys {
		c.queue.Add(key)
	}
}

// requeueAll syncs every Service of the scope now.
func (c *ServiceController) requeueAll() {
	services, err := c.services.List(labels.Everything())
	if err != nil {
		return
	}
	for _, svc := range services {
		c.enqueue(svc)
	}
}
