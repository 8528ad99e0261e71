// Package kubeclient is herald-agent's connection to the apiserver. It
// stands in for client-go's clientset and informer factory, which link
// every typed client, informer and apply configuration of every API group
// (and the OpenAPI machinery behind them): tens of megabytes of binary
// that the kernel maps into every agent's resident memory, for a process
// that reads four resources. The Client here speaks REST for those alone,
// with a scheme of their three API groups; Informers is a factory of plain
// shared informers over any Source, so that unit tests can feed the agent
// from client-go's fake clientset (kubeclienttest) while the agent binary
// never links it.
package kubeclient

import (
	"fmt"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"
)

// Resource is one of the resources herald-agent watches.
type Resource int

// The resources herald-agent watches.
const (
	Services Resource = iota
	EndpointSlices
	Nodes
	ServiceCIDRs
)

// kind is what the REST client and the informers need to know of r: its
// name for the apiserver, an empty object (the informer's expected type)
// and an empty list to decode into.
func (r Resource) kind() (schema.GroupVersionResource, runtime.Object, runtime.Object) {
	switch r {
	case Services:
		return v1.SchemeGroupVersion.WithResource("services"), &v1.Service{}, &v1.ServiceList{}
	case EndpointSlices:
		return discoveryv1.SchemeGroupVersion.WithResource("endpointslices"), &discoveryv1.EndpointSlice{}, &discoveryv1.EndpointSliceList{}
	case Nodes:
		return v1.SchemeGroupVersion.WithResource("nodes"), &v1.Node{}, &v1.NodeList{}
	case ServiceCIDRs:
		return networkingv1.SchemeGroupVersion.WithResource("servicecidrs"), &networkingv1.ServiceCIDR{}, &networkingv1.ServiceCIDRList{}
	}
	panic(fmt.Sprintf("kubeclient: unknown resource %d", int(r)))
}

// GroupVersionResource names r for the apiserver.
func (r Resource) GroupVersionResource() schema.GroupVersionResource {
	gvr, _, _ := r.kind()
	return gvr
}

// String is the resource's group/version/resource, as informers name it in
// their logs.
func (r Resource) String() string { return r.GroupVersionResource().String() }

func (r Resource) newObject() runtime.Object {
	_, obj, _ := r.kind()
	return obj
}

func (r Resource) newList() runtime.Object {
	_, _, list := r.kind()
	return list
}

// Source lists and watches the agent's resources cluster-wide and answers
// the one discovery question the agent asks. Client is the real one;
// kubeclienttest adapts client-go's fake clientset for unit tests.
type Source interface {
	// ListWatch lists and watches r in all namespaces; tweak, if not nil,
	// edits every request's options (selectors).
	ListWatch(r Resource, tweak func(*metav1.ListOptions)) cache.ListerWatcher
	// ServerResourcesForGroupVersion is discovery.DiscoveryInterface's:
	// the resources the apiserver serves in groupVersion, a NotFound error
	// when it serves no such group version.
	ServerResourcesForGroupVersion(groupVersion string) (*metav1.APIResourceList, error)
}
