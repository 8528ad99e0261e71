package kubeclient_test

import (
	"context"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/heraldlb/herald/internal/kubeclient"
	"github.com/heraldlb/herald/internal/kubeclient/kubeclienttest"
)

func TestInformersShareOneInformerWithOptionsAndTransform(t *testing.T) {
	svc := func(name string, labels map[string]string) *v1.Service {
		return &v1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: labels,
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}}}
	}
	src := kubeclienttest.Clientset{Interface: fake.NewClientset(svc("mine", nil), svc("other", map[string]string{"skip": "yes"}))}
	f := kubeclient.NewInformers(src,
		kubeclient.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = "!skip" }),
		kubeclient.WithTransform(func(obj any) (any, error) {
			obj.(*v1.Service).ManagedFields = nil
			return obj, nil
		}))
	inf := f.Informer(kubeclient.Services)
	if f.Informer(kubeclient.Services) != inf {
		t.Fatal("a second Informer call made a second informer")
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.Start(ctx.Done())
	f.Start(ctx.Done()) // started once only
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("no sync")
	}
	keys := inf.GetStore().ListKeys()
	if len(keys) != 1 || keys[0] != "ns/mine" {
		t.Errorf("cached %v, want only ns/mine (the selector skips the other)", keys)
	}
	if objs, _ := inf.GetIndexer().ByIndex(cache.NamespaceIndex, "ns"); len(objs) != 1 {
		t.Errorf("namespace index holds %d objects, want 1", len(objs))
	} else if mf := objs[0].(*v1.Service).ManagedFields; mf != nil {
		t.Errorf("the transform did not run: managedFields %v", mf)
	}
	cancel()
	f.Shutdown()
}
