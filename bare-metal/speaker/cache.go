package speaker

import (
	"context"
	"fmt"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/internal/kubeclient"
)

var (
	poolResource    = v1alpha1.SchemeGroupVersion.WithResource("ipaddresspools")
	adResource      = v1alpha1.SchemeGroupVersion.WithResource("l2advertisements")
	bgpPeerResource = v1alpha1.SchemeGroupVersion.WithResource("bgppeers")
	bgpAdResource   = v1alpha1.SchemeGroupVersion.WithResource("bgpadvertisements")
)

// cacheOptions say which protocols' objects to watch.
type cacheOptions struct {
	layer2, bgp bool
}

// cache holds the informers the speaker decides from.
type cache struct {
	shared   *kubeclient.Informers
	own      *kubeclient.Informers // all Nodes (the data plane watches only its own)
	crds     []toolscache.SharedIndexInformer
	services ServiceCache
	nodes    corelisters.NodeLister
	pools    toolscache.GenericLister
	ads      toolscache.GenericLister // nil without Layer 2
	bgpPeers toolscache.GenericLister // nil without BGP
	bgpAds   toolscache.GenericLister // nil without BGP
	watched  []schema.GroupVersionResource
	synced   []toolscache.InformerSynced
}

func newCache(deps Deps, opts cacheOptions, changed func()) (*cache, error) {
	c := &cache{
		shared: deps.Informers,
		own:    kubeclient.NewInformers(deps.Source),
	}
	svc, sl, nodes := c.shared.Informer(kubeclient.Services), c.shared.Informer(kubeclient.EndpointSlices), c.own.Informer(kubeclient.Nodes)
	c.services, c.nodes = deps.Services, c.own.NodeLister()

	always := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { changed() },
		UpdateFunc: func(_, _ any) { changed() },
		DeleteFunc: func(any) { changed() },
	}
	// Kubelets update their Node's status every few seconds; only what
	// the election looks at matters.
	nodeHandler := always
	nodeHandler.UpdateFunc = func(o, n any) {
		on, ok1 := o.(*v1.Node)
		nn, ok2 := n.(*v1.Node)
		if !ok1 || !ok2 || nodeMatters(on) != nodeMatters(nn) {
			changed()
		}
	}
	type registration struct {
		inf toolscache.SharedIndexInformer
		h   toolscache.ResourceEventHandler
	}
	regs := []registration{{svc, always}, {sl, always}, {nodes, nodeHandler}}
	crd := func(r schema.GroupVersionResource) toolscache.GenericLister {
		inf, lister := kubeclient.DynamicInformer(deps.Dynamic, r)
		c.crds = append(c.crds, inf)
		c.watched = append(c.watched, r)
		regs = append(regs, registration{inf, always})
		return lister
	}
	c.pools = crd(poolResource)
	if opts.layer2 {
		c.ads = crd(adResource)
	}
	if opts.bgp {
		c.bgpPeers, c.bgpAds = crd(bgpPeerResource), crd(bgpAdResource)
	}
	for _, reg := range regs {
		r, err := reg.inf.AddEventHandler(reg.h)
		if err != nil {
			return nil, fmt.Errorf("event handler: %w", err)
		}
		c.synced = append(c.synced, r.HasSynced)
	}
	return c, nil
}

// nodeMatters is what the election reads of a Node, as a comparable
// value.
type nodeView struct {
	labels, taints, addrs string
	ready, unschedulable  bool
}

func nodeMatters(n *v1.Node) nodeView {
	v := nodeView{labels: labels.Set(n.Labels).String(), unschedulable: n.Spec.Unschedulable,
		taints: fmt.Sprint(n.Spec.Taints), addrs: fmt.Sprint(n.Status.Addresses)}
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			v.ready = c.Status == v1.ConditionTrue
		}
	}
	return v
}

// resources are the CRDs the cache watches.
func (c *cache) resources() []schema.GroupVersionResource { return c.watched }

func (c *cache) start(ctx context.Context) {
	c.shared.Start(ctx.Done())
	c.own.Start(ctx.Done())
	for _, inf := range c.crds {
		go inf.RunWithContext(ctx)
	}
}

func (c *cache) waitForSync(ctx context.Context) bool {
	return toolscache.WaitForCacheSync(ctx.Done(), c.synced...)
}

// world reads the caches into the decision's input.
func (c *cache) world(self string, classOnly bool) (world, error) {
	w := world{self: self, classOnly: classOnly}
	var err error
	w.services = c.services.Services()
	if w.nodes, err = c.nodes.List(labels.Everything()); err != nil {
		return world{}, err
	}
	if w.pools, err = listTyped[v1alpha1.IPAddressPool](c.pools); err != nil {
		return world{}, err
	}
	if c.ads != nil {
		if w.ads, err = listTyped[v1alpha1.L2Advertisement](c.ads); err != nil {
			return world{}, err
		}
	}
	if c.bgpPeers != nil {
		if w.bgpPeers, err = listTyped[v1alpha1.BGPPeer](c.bgpPeers); err != nil {
			return world{}, err
		}
		if w.bgpAds, err = listTyped[v1alpha1.BGPAdvertisement](c.bgpAds); err != nil {
			return world{}, err
		}
	}
	// Only externalTrafficPolicy Local needs them (see localEndpoints).
	var local []types.NamespacedName
	for _, svc := range w.services {
		if svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal {
			local = append(local, types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name})
		}
	}
	nodes := c.services.EndpointNodes(local)
	w.endpointNodes = func(svc *v1.Service) []string {
		return nodes[types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}]
	}
	return w, nil
}

// listTyped converts a dynamic lister's objects; one that does not convert
// (written by a newer herald, say) is skipped rather than failing them all.
func listTyped[T any, PT interface {
	*T
	metav1.Object
}](lister toolscache.GenericLister) ([]PT, error) {
	objs, err := lister.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	out := make([]PT, 0, len(objs))
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		var typed T
		if runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &typed) == nil {
			out = append(out, PT(&typed))
		}
	}
	return out, nil
}

// bgpPeer returns the cached BGPPeer name, nil if there is none.
func (c *cache) bgpPeer(name string) *v1alpha1.BGPPeer {
	return getTyped[v1alpha1.BGPPeer](c.bgpPeers, name)
}

// bgpAd returns the cached BGPAdvertisement name, nil if there is none.
func (c *cache) bgpAd(name string) *v1alpha1.BGPAdvertisement {
	return getTyped[v1alpha1.BGPAdvertisement](c.bgpAds, name)
}

func getTyped[T any](lister toolscache.GenericLister, name string) *T {
	if lister == nil {
		return nil
	}
	o, err := lister.Get(name)
	if err != nil {
		return nil
	}
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return nil
	}
	var typed T
	if runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &typed) != nil {
		return nil
	}
	return &typed
}
