package e2e

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	baremetal "github.com/heraldlb/herald/bare-metal"
	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/provider/service"
)

const loadBalancerFinalizer = "service.kubernetes.io/load-balancer-cleanup"

// twoPools: "main" serves any Service; "small" has one address and only
// serves Services that name it. Both stay outside the harness's service
// CIDR (203.0.113.0/24): an address the apiserver gave out as a ClusterIP
// has its IPAddress object, so herald cannot claim it and would report the
// one-address pool exhausted.
const twoPools = `
backend: bare-metal
bareMetal:
  pools:
  - name: main
    addresses: ["198.51.100.10-198.51.100.19"]
  - name: small
    addresses: ["198.51.100.200/32"]
    autoAssign: false
`

func startLab(t *testing.T, cloudConfig string, ccmArgs ...string) (*cluster.Cluster, kubernetes.Interface, *ccm) {
	t.Helper()
	c := cluster.StartForTest(t, cluster.Options{})
	client := kubernetes.NewForConfigOrDie(c.Config)
	createNodes(t, client, "node-a", "node-b")
	return c, client, startCCM(t, c, cloudConfig, ccmArgs...)
}

func TestLoadBalancerServiceGetsAddressFromPool(t *testing.T) {
	c, client, m := startLab(t, twoPools)
	createNamespace(t, client, "web")
	svc := newService("web", "front", v1.ServiceTypeLoadBalancer, nil)
	svc.Spec.Ports = append(svc.Spec.Ports, v1.ServicePort{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53})
	created := createService(t, client, svc)

	got := waitForService(t, client, "web", "front", "has an ingress IP", hasIngress)
	if len(got.Status.LoadBalancer.Ingress) != 1 {
		t.Fatalf("ingress = %+v, want one IPv4 address", got.Status.LoadBalancer.Ingress)
	}
	ingress := got.Status.LoadBalancer.Ingress[0]
	ip := netip.MustParseAddr(ingress.IP)
	if first, last := netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("198.51.100.19"); ip.Less(first) || last.Less(ip) {
		t.Errorf("ingress IP %s is outside pool main", ip)
	}
	if ingress.IPMode == nil || *ingress.IPMode != v1.LoadBalancerIPModeVIP {
		t.Errorf("ipMode = %v, want VIP", ingress.IPMode)
	}
	if !slices.Contains(got.Finalizers, loadBalancerFinalizer) {
		t.Errorf("finalizers = %v, want %s", got.Finalizers, loadBalancerFinalizer)
	}
	// What the apiserver allocated is not herald's to change.
	if !slices.Equal(got.Spec.ClusterIPs, created.Spec.ClusterIPs) {
		t.Errorf("clusterIPs changed from %v to %v", created.Spec.ClusterIPs, got.Spec.ClusterIPs)
	}
	for i := range created.Spec.Ports {
		if created.Spec.Ports[i].NodePort == 0 || got.Spec.Ports[i].NodePort != created.Spec.Ports[i].NodePort {
			t.Errorf("port %d nodePort %d -> %d", i, created.Spec.Ports[i].NodePort, got.Spec.Ports[i].NodePort)
		}
	}
	condition := meta.FindStatusCondition(got.Status.Conditions, baremetal.ConditionAddressAllocated)
	if condition == nil || condition.Status != metav1.ConditionTrue {
		t.Errorf("condition %s = %+v, want True", baremetal.ConditionAddressAllocated, condition)
	}
	message := waitForEvent(t, client, "web", "front", v1.EventTypeNormal, baremetal.ReasonIPAllocated)
	if !strings.Contains(message, ip.String()) || !strings.Contains(message, "main") {
		t.Errorf("IPAllocated message %q does not name the address and pool", message)
	}
	out := kubectl(t, c, "get", "svc", "-n", "web", "front")
	if !strings.Contains(out, "EXTERNAL-IP") || !strings.Contains(out, ip.String()) {
		t.Errorf("kubectl get svc does not show EXTERNAL-IP %s:\n%s", ip, out)
	}
	m.requireRunning(t)
}

func TestOtherServicesAreLeftAlone(t *testing.T) {
	_, client, m := startLab(t, twoPools)
	createNamespace(t, client, "apps")
	foreign := newService("apps", "foreign", v1.ServiceTypeLoadBalancer, nil)
	class := "example.com/other-lb"
	foreign.Spec.LoadBalancerClass = &class
	untouched := []*v1.Service{
		createService(t, client, newService("apps", "internal", v1.ServiceTypeClusterIP, nil)),
		createService(t, client, newService("apps", "nodeport", v1.ServiceTypeNodePort, nil)),
		createService(t, client, foreign),
	}
	createService(t, client, newService("apps", "ours", v1.ServiceTypeLoadBalancer, nil))
	waitForService(t, client, "apps", "ours", "has an ingress IP", hasIngress)
	// The watch delivers the Services in the order they were created, so
	// the others reached the controllers before ours; with ours served and
	// the queues drained, whatever the controllers did with them is done.
	m.waitQueuesDrained(t, "service-lb-controller", "herald-class-controller")
	for _, before := range untouched {
		after, err := client.CoreV1().Services("apps").Get(context.Background(), before.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if after.ResourceVersion != before.ResourceVersion || hasIngress(after) || len(after.Finalizers) > 0 {
			t.Errorf("service %s was touched: rv %s -> %s, ingress %v, finalizers %v", before.Name,
				before.ResourceVersion, after.ResourceVersion, after.Status.LoadBalancer.Ingress, after.Finalizers)
		}
	}
	m.requireRunning(t)
}

func TestAddressIsReleasedOnDeleteAndTypeChange(t *testing.T) {
	_, client, m := startLab(t, twoPools)
	createNamespace(t, client, "shop")
	inSmall := map[string]string{service.AnnotationAddressPool: "small"}

	createService(t, client, newService("shop", "first", v1.ServiceTypeLoadBalancer, inSmall))
	first := waitForService(t, client, "shop", "first", "has an ingress IP", hasIngress)
	if got := ingressIPs(first); !slices.Equal(got, []string{"198.51.100.200"}) {
		t.Fatalf("ingress = %v, want the only address of pool small", got)
	}

	// Delete: the finalizer goes, then the Service, and the address is free.
	if err := client.CoreV1().Services("shop").Delete(context.Background(), "first", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForServiceAbsent(t, client, "shop", "first")
	waitForEvent(t, client, "shop", "first", v1.EventTypeNormal, baremetal.ReasonIPReleased)
	createService(t, client, newService("shop", "second", v1.ServiceTypeLoadBalancer, inSmall))
	second := waitForService(t, client, "shop", "second", "reuses the released IP", hasIngress)
	if got := ingressIPs(second); !slices.Equal(got, []string{"198.51.100.200"}) {
		t.Fatalf("ingress = %v, want the released address again", got)
	}

	// Type change to ClusterIP: status, finalizer and condition go; the
	// address is free again.
	toClusterIP(t, client, second)
	waitForService(t, client, "shop", "second", "lost ingress, finalizer and condition", func(s *v1.Service) bool {
		return !hasIngress(s) && len(s.Finalizers) == 0 &&
			meta.FindStatusCondition(s.Status.Conditions, baremetal.ConditionAddressAllocated) == nil
	})
	createService(t, client, newService("shop", "third", v1.ServiceTypeLoadBalancer, inSmall))
	third := waitForService(t, client, "shop", "third", "reuses the released IP", hasIngress)
	if got := ingressIPs(third); !slices.Equal(got, []string{"198.51.100.200"}) {
		t.Fatalf("ingress = %v, want the address released by the type change", got)
	}
	m.requireRunning(t)
}
