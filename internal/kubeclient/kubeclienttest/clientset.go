// Package kubeclienttest feeds kubeclient.Informers from client-go's
// clientset (the fake one, in unit tests). Only tests import it: it links
// the whole clientset, which herald-agent's binary must not.
package kubeclienttest

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/heraldlb/herald/internal/kubeclient"
)

// Clientset is a kubeclient.Source over a clientset.
type Clientset struct{ kubernetes.Interface }

var _ kubeclient.Source = Clientset{}

// ListWatch lists and watches r through the clientset's typed client, as
// its generated informer would (the fake clientset opts out of WatchList
// semantics, and so does this).
func (c Clientset) ListWatch(r kubeclient.Resource, tweak func(*metav1.ListOptions)) cache.ListerWatcher {
	edit := func(o *metav1.ListOptions) {
		if tweak != nil {
			tweak(o)
		}
	}
	list, watchFn := c.typed(r)
	return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			edit(&o)
			return list(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			edit(&o)
			return watchFn(ctx, o)
		},
	}, c.Interface)
}

type (
	listFunc  func(context.Context, metav1.ListOptions) (runtime.Object, error)
	watchFunc func(context.Context, metav1.ListOptions) (watch.Interface, error)
)

func (c Clientset) typed(r kubeclient.Resource) (listFunc, watchFunc) {
	switch r {
	case kubeclient.Services:
		i := c.CoreV1().Services("")
		return func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return i.List(ctx, o) }, i.Watch
	case kubeclient.EndpointSlices:
		i := c.DiscoveryV1().EndpointSlices("")
		return func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return i.List(ctx, o) }, i.Watch
	case kubeclient.Nodes:
		i := c.CoreV1().Nodes()
		return func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return i.List(ctx, o) }, i.Watch
	case kubeclient.ServiceCIDRs:
		i := c.NetworkingV1().ServiceCIDRs()
		return func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return i.List(ctx, o) }, i.Watch
	}
	panic("kubeclienttest: unknown resource " + r.String())
}

// ServerResourcesForGroupVersion asks the clientset's discovery.
func (c Clientset) ServerResourcesForGroupVersion(gv string) (*metav1.APIResourceList, error) {
	return c.Discovery().ServerResourcesForGroupVersion(gv)
}
