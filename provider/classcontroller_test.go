package provider

import (
	"context"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/heraldlb/herald/provider/service"
)

// classFixture runs the class controller's sync over a fake clientset whose
// informers are fed by hand, so each step is explicit.
type classFixture struct {
	controller *ClassController
	client     *fake.Clientset
	factory    informers.SharedInformerFactory
	backend    *fakeBackend
}

func newClassFixture(t *testing.T, svc *v1.Service) *classFixture {
	t.Helper()
	client := fake.NewClientset(svc)
	backend := &fakeBackend{}
	p := New(backend, service.Selection{})
	p.client, p.recorder, p.startErr = client, record.NewFakeRecorder(10), nil
	factory := informers.NewSharedInformerFactory(client, 0)
	c, err := NewClassController(p, client, factory.Core().V1().Services(), factory.Core().V1().Nodes())
	if err != nil {
		t.Fatal(err)
	}
	return &classFixture{controller: c, client: client, factory: factory, backend: backend}
}

// step copies the Service's current state into the informer and syncs it.
func (f *classFixture) step(t *testing.T, name string) *v1.Service {
	t.Helper()
	current, err := f.client.CoreV1().Services("ns").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.factory.Core().V1().Services().Informer().GetIndexer().Update(current); err != nil {
		t.Fatal(err)
	}
	if err := f.controller.sync(context.Background(), "ns/"+name); err != nil {
		t.Fatalf("sync: %v", err)
	}
	after, err := f.client.CoreV1().Services("ns").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return after
}

func TestClassControllerLifecycle(t *testing.T) {
	svc := testService(nil)
	class := service.Class
	svc.Spec.LoadBalancerClass = &class
	f := newClassFixture(t, svc)

	got := f.step(t, "svc")
	if !slices.Contains(got.Finalizers, ClassFinalizer) || len(f.backend.ensured) != 0 {
		t.Fatalf("first sync: finalizers %v, ensured %v; want the finalizer before any address", got.Finalizers, f.backend.ensured)
	}
	got = f.step(t, "svc")
	if len(got.Status.LoadBalancer.Ingress) != 1 || got.Status.LoadBalancer.Ingress[0].IP != "192.0.2.1" {
		t.Fatalf("second sync: status %+v", got.Status.LoadBalancer)
	}
	f.client.ClearActions()
	f.step(t, "svc")
	for _, a := range f.client.Actions() {
		if a.GetVerb() == "patch" {
			t.Errorf("an unchanged Service was patched: %v", a)
		}
	}

	got.Spec.Type = v1.ServiceTypeClusterIP
	got.Spec.LoadBalancerClass = nil
	if _, err := f.client.CoreV1().Services("ns").Update(context.Background(), got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	got = f.step(t, "svc")
	if len(got.Status.LoadBalancer.Ingress) != 0 || len(got.Finalizers) != 0 || len(f.backend.deleted) != 1 {
		t.Fatalf("after type change: status %+v, finalizers %v, deleted %v", got.Status.LoadBalancer, got.Finalizers, f.backend.deleted)
	}
}

func TestClassControllerIgnoresOtherServices(t *testing.T) {
	for _, class := range []*string{nil, new("example.com/other")} {
		svc := testService(nil)
		svc.Spec.LoadBalancerClass = class
		f := newClassFixture(t, svc)
		got := f.step(t, "svc")
		if len(got.Finalizers) != 0 || len(f.backend.ensured) != 0 {
			t.Errorf("class %v: finalizers %v, ensured %v", class, got.Finalizers, f.backend.ensured)
		}
		for _, a := range f.client.Actions() {
			if a.GetVerb() != "get" {
				t.Errorf("class %v: the controller wrote: %v", class, a)
			}
		}
	}
}
