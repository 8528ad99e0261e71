package agent

import (
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
)

// slimObject is the informer transform of the objects the agent's caches
// hold in full (LoadBalancer Services, see compactor, and
// ServiceCIDRs): it drops, before an object enters the cache, what no part
// of the agent reads and what makes up much of a cached object at scale:
// managedFields (every writer's field ownership), kubectl's
// last-applied-configuration (a copy of the whole object as applied) and a
// Service's selector (the EndpointSlice controller's business, not a
// proxy's). Objects handed to a transform are the informer's own, so
// editing them in place is allowed.
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
	return obj, nil
}
