package agent

import (
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
)

// slimObject is the informer transform of the agent's Services and
// EndpointSlices: it drops, before an object enters the cache, what no part
// of the agent reads and what makes up much of a cached object at scale:
// managedFields (every writer's field ownership), kubectl's
// last-applied-configuration (a copy of the whole object as applied), a
// Service's selector (the EndpointSlice controller's business, not a
// proxy's), an EndpointSlice's UID and owner references (nothing looks a
// slice up but by namespace and name), and each endpoint's targetRef,
// deprecatedTopology, hostname and zone (topology is read from hints, which
// the EndpointSlice controller derives from zones). Objects handed to a
// transform are the informer's own, so editing them in place is allowed.
//
// Every consumer of the factory (the data plane and the Layer 2 speaker)
// reads the cache, so the fields dropped here must stay unread by both.
func slimObject(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
		if a := m.GetAnnotations(); a[v1.LastAppliedConfigAnnotation] != "" {
			delete(a, v1.LastAppliedConfigAnnotation)
		}
	}
	if svc, ok := obj.(*v1.Service); ok {
		svc.Spec.Selector = nil
	}
	if s, ok := obj.(*discoveryv1.EndpointSlice); ok {
		s.UID, s.OwnerReferences = "", nil
		for i := range s.Endpoints {
			ep := &s.Endpoints[i]
			ep.TargetRef, ep.DeprecatedTopology, ep.Hostname, ep.Zone = nil, nil, nil, nil
		}
	}
	return obj, nil
}
