package e2e

import (
	"context"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"k8s.io/client-go/kubernetes"

	baremetal "github.com/heraldlb/herald/bare-metal"
	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/provider"
	"github.com/heraldlb/herald/provider/service"
)

func classedService(namespace, name string) *v1.Service {
	svc := newService(namespace, name, v1.ServiceTypeLoadBalancer, nil)
	class := service.Class
	svc.Spec.LoadBalancerClass = &class
	return svc
}

// Services naming herald's class are handled by herald's own controller
// (the upstream one ignores every class): address, finalizer, condition,
// and release on delete and on a change of type.
func TestServiceWithHeraldClass(t *testing.T) {
	_, client, m := startLab(t, twoPools)
	createNamespace(t, client, "cls")
	created := createService(t, client, classedService("cls", "one"))
	one := waitForService(t, client, "cls", "one", "has an ingress IP", hasIngress)
	if !slices.Contains(one.Finalizers, provider.ClassFinalizer) || slices.Contains(one.Finalizers, loadBalancerFinalizer) {
		t.Errorf("finalizers = %v, want only herald's", one.Finalizers)
	}
	if in := one.Status.LoadBalancer.Ingress[0]; in.IPMode == nil || *in.IPMode != v1.LoadBalancerIPModeVIP {
		t.Errorf("ingress = %+v, want ipMode VIP", in)
	}
	if !slices.Equal(one.Spec.ClusterIPs, created.Spec.ClusterIPs) || one.Spec.Ports[0].NodePort != created.Spec.Ports[0].NodePort {
		t.Errorf("spec changed: %v/%d -> %v/%d", created.Spec.ClusterIPs, created.Spec.Ports[0].NodePort,
			one.Spec.ClusterIPs, one.Spec.Ports[0].NodePort)
	}
	if !meta.IsStatusConditionTrue(one.Status.Conditions, baremetal.ConditionAddressAllocated) {
		t.Errorf("conditions = %+v", one.Status.Conditions)
	}
	waitForEvent(t, client, "cls", "one", v1.EventTypeNormal, baremetal.ReasonIPAllocated)

	if err := client.CoreV1().Services("cls").Delete(context.Background(), "one", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForServiceAbsent(t, client, "cls", "one")
	waitForEvent(t, client, "cls", "one", v1.EventTypeNormal, baremetal.ReasonIPReleased)

	createService(t, client, classedService("cls", "two"))
	two := waitForService(t, client, "cls", "two", "has an ingress IP", hasIngress)
	if !slices.Equal(ingressIPs(two), ingressIPs(one)) {
		t.Errorf("two got %v, want the address one released (%v)", ingressIPs(two), ingressIPs(one))
	}
	toClusterIP(t, client, two)
	waitForService(t, client, "cls", "two", "lost ingress, finalizer and condition", func(s *v1.Service) bool {
		return !hasIngress(s) && len(s.Finalizers) == 0 &&
			meta.FindStatusCondition(s.Status.Conditions, baremetal.ConditionAddressAllocated) == nil
	})
	m.requireRunning(t)
}

// With --load-balancer-class-only, Services without a class are another
// implementation's: herald writes nothing on them.
func TestClassOnlyLeavesClasslessServicesAlone(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Options{})
	client := kubernetes.NewForConfigOrDie(c.Config)
	createNodes(t, client, "node-a")
	m := startCCM(t, c, twoPools, "--load-balancer-class-only")
	createNamespace(t, client, "mixed")
	classless := createService(t, client, newService("mixed", "classless", v1.ServiceTypeLoadBalancer, nil))
	createService(t, client, classedService("mixed", "classed"))
	waitForService(t, client, "mixed", "classed", "has an ingress IP", hasIngress)
	after, err := client.CoreV1().Services("mixed").Get(context.Background(), "classless", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != classless.ResourceVersion || hasIngress(after) || len(after.Finalizers) > 0 {
		t.Errorf("classless Service was touched: rv %s -> %s, status %+v, finalizers %v",
			classless.ResourceVersion, after.ResourceVersion, after.Status, after.Finalizers)
	}
	m.requireRunning(t)
}
