package kubeclient

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// reduced is an object an informer transform might keep.
type reduced struct {
	ObjectMeta
	payload int
}

// TestObjectMetaIsWhatInformersRead: a reduced object has the key, the
// namespace and the resourceVersion informers and their stores read.
func TestObjectMetaIsWhatInformersRead(t *testing.T) {
	full := &metav1.ObjectMeta{Namespace: "ns", Name: "web", ResourceVersion: "42", UID: "u", Labels: map[string]string{"a": "b"}}
	obj := &reduced{ObjectMeta: ObjectMetaOf(full), payload: 1}
	key, err := cache.MetaNamespaceKeyFunc(obj)
	if err != nil || key != "ns/web" {
		t.Errorf("key %q, %v; want ns/web", key, err)
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		t.Fatal(err)
	}
	if m.GetResourceVersion() != "42" || m.GetNamespace() != "ns" || m.GetLabels() != nil || m.GetUID() != "" {
		t.Errorf("accessor reads %q %q %v %q", m.GetResourceVersion(), m.GetNamespace(), m.GetLabels(), m.GetUID())
	}
	m.SetName("other")
	if obj.Name != "web" {
		t.Error("a setter changed the kept name")
	}
}
