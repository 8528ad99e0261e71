package kubeclient

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ObjectMeta is the metadata of an object an informer transform reduced
// to what its consumers read: namespace and name (the cache's key) and the
// resourceVersion (informers tell an update from a resync by it, and the
// store tracks its version with it). It implements metav1.Object so that
// informers, their stores and their indexers take the reduced object as
// they take a full one; the setters do nothing and the other getters
// return zero values, because nothing else was kept.
type ObjectMeta struct {
	Namespace, Name, ResourceVersion string
}

var _ metav1.Object = (*ObjectMeta)(nil)

// ObjectMetaOf keeps what ObjectMeta keeps of m.
func ObjectMetaOf(m metav1.Object) ObjectMeta {
	return ObjectMeta{Namespace: m.GetNamespace(), Name: m.GetName(), ResourceVersion: m.GetResourceVersion()}
}

// GetNamespace implements metav1.Object.
func (m *ObjectMeta) GetNamespace() string { return m.Namespace }

// SetNamespace implements metav1.Object; the field is read-only once kept.
func (m *ObjectMeta) SetNamespace(string) {}

// GetName implements metav1.Object.
func (m *ObjectMeta) GetName() string { return m.Name }

// SetName implements metav1.Object; the field is read-only once kept.
func (m *ObjectMeta) SetName(string) {}

// GetGenerateName implements metav1.Object; nothing of it is kept.
func (m *ObjectMeta) GetGenerateName() string { return "" }

// SetGenerateName implements metav1.Object; it keeps nothing.
func (m *ObjectMeta) SetGenerateName(string) {}

// GetUID implements metav1.Object; nothing of it is kept.
func (m *ObjectMeta) GetUID() types.UID { return "" }

// SetUID implements metav1.Object; it keeps nothing.
func (m *ObjectMeta) SetUID(types.UID) {}

// GetResourceVersion implements metav1.Object.
func (m *ObjectMeta) GetResourceVersion() string { return m.ResourceVersion }

// SetResourceVersion implements metav1.Object; the field is read-only once kept.
func (m *ObjectMeta) SetResourceVersion(string) {}

// GetGeneration implements metav1.Object; nothing of it is kept.
func (m *ObjectMeta) GetGeneration() int64 { return 0 }

// SetGeneration implements metav1.Object; it keeps nothing.
func (m *ObjectMeta) SetGeneration(int64) {}

// GetSelfLink implements metav1.Object; nothing of it is kept.
func (m *ObjectMeta) GetSelfLink() string { return "" }

// SetSelfLink implements metav1.Object; it keeps nothing.
func (m *ObjectMeta) SetSelfLink(string) {}

// GetCreationTimestamp implements metav1.Object; nothing of it is kept.
func (m *ObjectMeta) GetCreationTimestamp() metav1.Time { return metav1.Time{} }

// SetCreationTimestamp implements metav1.Object; it keeps nothing.
func (m *ObjectMeta) SetCreationTimestamp(metav1.Time) {}

// GetDeletionTimestamp implements metav1.Object; nothing of it is kept.
func (m *ObjectMeta) GetDeletionTimestamp() *metav1.Time { return nil }

// SetDeletionTimestamp implements metav1.Object; it keeps nothing.
func (m *ObjectMeta) SetDeletionTimestamp(*metav1.Time) {}

// GetDeletionGracePeriodSeconds implements metav1.Object; nothing of it is kept.
func (m *ObjectMeta) GetDeletionGracePeriodSeconds() *int64 { return nil }

// SetDeletionGracePeriodSeconds implements metav1.Object; it keeps nothing.
func (m *ObjectMeta) SetDeletionGracePeriodSeconds(*int64) {}

// GetLabels implements metav1.Object; nothing of it is kept.
func (m *ObjectMeta) GetLabels() map[string]string { return nil }

// SetLabels implements metav1.Object; it keeps nothing.
func (m *ObjectMeta) SetLabels(map[string]string) {}

// GetAnnotations implements metav1.Object; nothing of it is kept.
func (m *ObjectMeta) GetAnnotations() map[string]string { return nil }

// SetAnnotations implements metav1.Object; it keeps nothing.
func (m *ObjectMeta) SetAnnotations(map[string]string) {}

// GetFinalizers implements metav1.Object; nothing of it is kept.
func (m *ObjectMeta) GetFinalizers() []string { return nil }

// SetFinalizers implements metav1.Object; it keeps nothing.
func (m *ObjectMeta) SetFinalizers([]string) {}

// GetOwnerReferences implements metav1.Object; nothing of it is kept.
func (m *ObjectMeta) GetOwnerReferences() []metav1.OwnerReference { return nil }

// SetOwnerReferences implements metav1.Object; it keeps nothing.
func (m *ObjectMeta) SetOwnerReferences([]metav1.OwnerReference) {}

// GetManagedFields implements metav1.Object; nothing of it is kept.
func (m *ObjectMeta) GetManagedFields() []metav1.ManagedFieldsEntry {
	return nil
}

// SetManagedFields implements metav1.Object; it keeps nothing.
func (m *ObjectMeta) SetManagedFields([]metav1.ManagedFieldsEntry) {}
