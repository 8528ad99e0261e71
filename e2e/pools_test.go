package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	baremetal "github.com/heraldlb/herald/bare-metal"
	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/provider/service"
)

var poolGVR = v1alpha1.SchemeGroupVersion.WithResource("ipaddresspools")

func createPool(t testing.TB, pools dynamic.ResourceInterface, name string, addresses ...string) {
	t.Helper()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": "IPAddressPool",
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{"addresses": toAny(addresses)},
	}}
	if _, err := pools.Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating IPAddressPool %s: %v", name, err)
	}
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// waitForPool polls until cond holds for the pool's status.
func waitForPool(t testing.TB, pools dynamic.ResourceInterface, name, what string, cond func(*v1alpha1.IPAddressPool) bool) *v1alpha1.IPAddressPool {
	t.Helper()
	var last *v1alpha1.IPAddressPool
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, waitTimeout, true,
		func(ctx context.Context) (bool, error) {
			u, err := pools.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil //nolint:nilerr // keep polling through transient errors
			}
			last = &v1alpha1.IPAddressPool{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, last); err != nil {
				return false, err
			}
			return cond(last), nil
		})
	if err != nil {
		t.Fatalf("pool %s: %s: not within %v; last status %+v", name, what, waitTimeout, lastPoolStatus(last))
	}
	return last
}

func lastPoolStatus(p *v1alpha1.IPAddressPool) any {
	if p == nil {
		return nil
	}
	return p.Status
}

// poolLab is a cluster with the CRDs, one Node, an IPAddressPool, and
// herald-ccm with no pool of its own.
type poolLab struct {
	c      *cluster.Cluster
	client kubernetes.Interface
	pools  dynamic.ResourceInterface
	ccm    *ccm
}

// startPoolCCM starts a poolLab whose pool is called pool, and a Namespace.
func startPoolCCM(t testing.TB, namespace, pool string, addresses ...string) poolLab {
	t.Helper()
	c, client, pools := startPoolLab(t)
	createPool(t, pools, pool, addresses...)
	m := startCCM(t, c, "backend: bare-metal\n")
	createNamespace(t, client, namespace)
	return poolLab{c: c, client: client, pools: pools, ccm: m}
}

// startPoolLab starts a cluster with the CRDs installed and one Node.
func startPoolLab(t testing.TB) (*cluster.Cluster, kubernetes.Interface, dynamic.ResourceInterface) {
	t.Helper()
	c := cluster.StartForTest(t, cluster.Options{})
	installCRDs(t, c)
	client := kubernetes.NewForConfigOrDie(c.Config)
	createNodes(t, client, "node-a")
	return c, client, dynamic.NewForConfigOrDie(c.Config).Resource(poolGVR)
}

// IPAddressPool objects are a source of addresses: herald-ccm allocates
// from them, reports usage and problems in their status, and a deleted
// pool keeps its Services' addresses while giving no new ones.
func TestIPAddressPoolObjects(t *testing.T) {
	c, client, pools := startPoolLab(t)
	createPool(t, pools, "blue", "198.51.100.64/30")
	createPool(t, pools, "overlapping", "198.51.100.66-198.51.100.70")
	createPool(t, pools, "reversed", "198.51.100.90-198.51.100.80")
	m := startCCM(t, c, "backend: bare-metal\n")
	createNamespace(t, client, "app")

	inBlue := map[string]string{service.AnnotationAddressPool: "blue"}
	createService(t, client, newService("app", "one", v1.ServiceTypeLoadBalancer, inBlue))
	one := waitForService(t, client, "app", "one", "has an ingress IP", hasIngress)
	if ip := ingressIPs(one)[0]; !strings.HasPrefix(ip, "198.51.100.6") {
		t.Fatalf("one got %s, want an address of pool blue", ip)
	}

	blue := waitForPool(t, pools, "blue", "counts one address in use and reports the overlap", func(p *v1alpha1.IPAddressPool) bool {
		return p.Status.IPv4 != nil && p.Status.IPv4.InUse == 1 &&
			meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.ConditionConflicting)
	})
	if *blue.Status.IPv4 != (v1alpha1.AddressCounts{Total: 4, InUse: 1, Free: 3}) ||
		!meta.IsStatusConditionTrue(blue.Status.Conditions, v1alpha1.ConditionReady) {
		t.Errorf("blue status = %+v", blue.Status)
	}
	waitForPool(t, pools, "overlapping", "is Conflicting, naming blue", func(p *v1alpha1.IPAddressPool) bool {
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionConflicting)
		return c != nil && c.Status == metav1.ConditionTrue && strings.Contains(c.Message, "blue")
	})
	waitForPool(t, pools, "reversed", "is not Ready: the range ends before it starts", func(p *v1alpha1.IPAddressPool) bool {
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1alpha1.ReasonInvalidAddresses &&
			strings.Contains(c.Message, "spec.addresses[0]")
	})
	out := kubectl(t, c, "get", "ipaddresspools", "blue")
	if !strings.Contains(out, "198.51.100.64/30") {
		t.Errorf("kubectl get ipaddresspools does not show the addresses:\n%s", out)
	}

	// Deleting a pool in use stops new allocations but keeps what Services
	// hold, reporting it (lifecycle_test.go has the details).
	if err := pools.Delete(context.Background(), "blue", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	createService(t, client, newService("app", "two", v1.ServiceTypeLoadBalancer, inBlue))
	message := waitForEvent(t, client, "app", "two", v1.EventTypeWarning, baremetal.ReasonAllocationFailed)
	if !strings.Contains(message, "blue") {
		t.Errorf("AllocationFailed message %q does not name the pool", message)
	}
	still := waitForService(t, client, "app", "one", "reports its address outside every pool", func(s *v1.Service) bool {
		return condition(s) != nil && condition(s).Reason == baremetal.ReasonAddressOutsidePools
	})
	if !slices.Equal(ingressIPs(still), ingressIPs(one)) {
		t.Errorf("one moved from %v to %v after its pool was deleted", ingressIPs(one), ingressIPs(still))
	}
	m.requireRunning(t)
}

// A restart with pools from objects only keeps every address: the
// allocations are rebuilt after the pools are known, not before.
func TestRestartWithPoolObjectsKeepsAddresses(t *testing.T) {
	c, client, pools := startPoolLab(t)
	createPool(t, pools, "green", "203.0.113.128/26")
	m := startCCM(t, c, "backend: bare-metal\n")
	createNamespace(t, client, "app")
	before := map[string]*v1.Service{}
	for i := range 10 {
		name := fmt.Sprintf("svc-%d", i)
		createService(t, client, newService("app", name, v1.ServiceTypeLoadBalancer, nil))
		before[name] = waitForService(t, client, "app", name, "has an ingress IP", hasIngress)
	}
	allocatedBefore := countEvents(t, client, "app", baremetal.ReasonIPAllocated)
	m.stop()
	restarted := startCCM(t, c, "backend: bare-metal\n")
	// Every Service synced by the restarted CCM: nothing written means
	// nothing changed.
	restarted.waitServices(t, "service-lb-controller", len(before), 0)
	createService(t, client, newService("app", "after", v1.ServiceTypeLoadBalancer, nil))
	waitForService(t, client, "app", "after", "has an ingress IP", hasIngress)
	for name, old := range before {
		now, err := client.CoreV1().Services("app").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil || now.ResourceVersion != old.ResourceVersion {
			t.Errorf("%s was written after the restart: %v %v -> %v", name, err, old.Status, now.Status)
		}
	}
	// Same addresses handed out anew would look the same in status; the
	// events tell a recovered allocation from a new one.
	if got := countEvents(t, client, "app", baremetal.ReasonIPAllocated); got != allocatedBefore+1 {
		t.Errorf("IPAllocated events went from %d to %d, want only the new Service's", allocatedBefore, got)
	}
	restarted.requireRunning(t)
}
