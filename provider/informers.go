package provider

import (
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// StripManagedFields is an informer transform that drops managedFields
// before an object enters the cache. No controller in herald-ccm reads
// them, and at thousands of Services and Nodes they are a large part of the
// cache (5,000 Services and 1,000 Nodes: see e2e/scale). Updates built from
// cached objects stay correct: an update without managedFields keeps the
// server's.
func StripManagedFields(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// slimSharedInformers strips managedFields from the shared informers the
// controllers of herald-ccm use, before the controller manager starts them.
func slimSharedInformers(factory informers.SharedInformerFactory, logger klog.Logger) {
	for name, informer := range map[string]cache.SharedIndexInformer{
		"services":   factory.Core().V1().Services().Informer(),
		"nodes":      factory.Core().V1().Nodes().Informer(),
		"namespaces": factory.Core().V1().Namespaces().Informer(),
	} {
		if err := informer.SetTransform(StripManagedFields); err != nil {
			// already started by someone else: it works, with more memory
			logger.Info("Informer keeps managedFields", "resource", name, "err", err)
		}
	}
}
