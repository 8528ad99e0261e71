package provider

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2"
)

func TestStripManagedFields(t *testing.T) {
	svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}}}
	out, err := StripManagedFields(svc)
	if err != nil || out != svc || svc.ManagedFields != nil || svc.Name != "web" {
		t.Fatalf("got %v, %v; want the same Service without managedFields", out, err)
	}
	// a tombstone or anything without metadata passes through
	tomb := "not an object"
	if out, err := StripManagedFields(tomb); err != nil || out != tomb {
		t.Fatalf("got %v, %v for a non-object", out, err)
	}
}

func TestSharedInformersCacheObjectsWithoutManagedFields(t *testing.T) {
	managed := metav1.ObjectMeta{ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}}
	svc, node := &v1.Service{ObjectMeta: managed}, &v1.Node{ObjectMeta: managed}
	svc.Namespace, svc.Name, node.Name = "ns", "web", "n1"
	client := fake.NewClientset(svc, node)
	factory := informers.NewSharedInformerFactory(client, 0)
	slimSharedInformers(factory, klog.Background())
	stop := make(chan struct{})
	defer close(stop)
	factory.Start(stop)
	for typ, ok := range factory.WaitForCacheSync(stop) {
		if !ok {
			t.Fatalf("%v did not sync", typ)
		}
	}
	gotSvc, err := factory.Core().V1().Services().Lister().Services("ns").Get("web")
	if err != nil {
		t.Fatal(err)
	}
	gotNode, err := factory.Core().V1().Nodes().Lister().Get("n1")
	if err != nil {
		t.Fatal(err)
	}
	if gotSvc.ManagedFields != nil || gotNode.ManagedFields != nil {
		t.Errorf("cached managedFields: Service %v, Node %v; want none", gotSvc.ManagedFields, gotNode.ManagedFields)
	}
}
