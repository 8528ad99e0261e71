package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	baremetal "github.com/heraldlb/herald/bare-metal"
	"github.com/heraldlb/herald/provider/service"
)

// The lifecycle of an address as a MetalLB user expects it (issue 8): a
// waiting Service gets a freed address at once, a restart renumbers
// nothing, an address outside every pool is reported and kept, an older
// pool keeps its addresses against a newer overlapping one, pool status
// agrees with the allocator, messages survive control characters, and IPv6
// pools do not hand out the Subnet-Router anycast address.

// promptly bounds how long a waiting Service may take to get an address
// that was freed or added. It is not a speed goal (the benchmark
// BenchmarkFreedAddressReachesWaitingService measures that); it tells a
// requeue on the change from a retry on the controller's backoff, whose
// first retry comes 5 s after the failure and the next ones 10 s, 20 s, ...
// later.
const promptly = 2500 * time.Millisecond

func patchPoolAddresses(t testing.TB, pools dynamic.ResourceInterface, name string, addresses ...string) {
	t.Helper()
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"addresses": addresses}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pools.Patch(context.Background(), name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("patching IPAddressPool %s: %v", name, err)
	}
}

func inPool(pool string) map[string]string {
	return map[string]string{service.AnnotationAddressPool: pool}
}

// A freed address, a new pool and a grown pool reach the Services waiting
// for them at once, not at their next retry (defect 1).
func TestFreedAddressReachesWaitingServices(t *testing.T) {
	c, client, pools := startPoolLab(t)
	createPool(t, pools, "pair", "198.51.100.40/31")
	m := startCCM(t, c, "backend: bare-metal\n")
	createNamespace(t, client, "queue")
	createService(t, client, newService("queue", "first", v1.ServiceTypeLoadBalancer, inPool("pair")))
	first := waitForService(t, client, "queue", "first", "has an ingress IP", hasIngress)
	createService(t, client, newService("queue", "second", v1.ServiceTypeLoadBalancer, inPool("pair")))
	waitForService(t, client, "queue", "second", "has an ingress IP", hasIngress)

	createService(t, client, newService("queue", "waiting", v1.ServiceTypeLoadBalancer, inPool("pair")))
	waitForEvent(t, client, "queue", "waiting", v1.EventTypeWarning, baremetal.ReasonAllocationFailed)
	freed := time.Now()
	if err := client.CoreV1().Services("queue").Delete(context.Background(), "first", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waiting := waitForServiceWithin(t, client, "queue", "waiting", "has the freed address", promptly, hasIngress)
	if !slices.Equal(ingressIPs(waiting), ingressIPs(first)) {
		t.Errorf("waiting got %v, want the address first freed (%v)", ingressIPs(waiting), ingressIPs(first))
	}
	t.Logf("the freed address reached the waiting Service %v after the delete", time.Since(freed).Round(time.Millisecond))

	createService(t, client, newService("queue", "early", v1.ServiceTypeLoadBalancer, inPool("later")))
	waitForEvent(t, client, "queue", "early", v1.EventTypeWarning, baremetal.ReasonAllocationFailed)
	createPool(t, pools, "later", "198.51.100.44/32")
	early := waitForServiceWithin(t, client, "queue", "early", "has an address of the new pool", promptly, hasIngress)
	if got := ingressIPs(early); !slices.Equal(got, []string{"198.51.100.44"}) {
		t.Errorf("early got %v, want 198.51.100.44", got)
	}

	createService(t, client, newService("queue", "grower", v1.ServiceTypeLoadBalancer, inPool("pair")))
	waitForEvent(t, client, "queue", "grower", v1.EventTypeWarning, baremetal.ReasonAllocationFailed)
	patchPoolAddresses(t, pools, "pair", "198.51.100.40/31", "198.51.100.46/32")
	grower := waitForServiceWithin(t, client, "queue", "grower", "has the address the pool grew by", promptly, hasIngress)
	if got := ingressIPs(grower); !slices.Equal(got, []string{"198.51.100.46"}) {
		t.Errorf("grower got %v, want 198.51.100.46", got)
	}
	m.requireRunning(t)
}

// herald-ccm records on each Service the pool its addresses came from,
// before status shows them, follows a change of pool, and removes the
// record with the addresses: node agents read it to pick the
// L2Advertisement of a VIP.
func TestAllocatedFromPoolAnnotation(t *testing.T) {
	c, client, pools := startPoolLab(t)
	createPool(t, pools, "first", "198.51.100.64/30")
	m := startCCM(t, c, "backend: bare-metal\n")
	createNamespace(t, client, "ann")
	versions := watchServices(t, client, "ann")
	createService(t, client, newService("ann", "web", v1.ServiceTypeLoadBalancer, nil))
	web := waitForService(t, client, "ann", "web", "has an ingress IP and the pool annotation", func(s *v1.Service) bool {
		return hasIngress(s) && s.Annotations[baremetal.AnnotationAllocatedFromPool] == "first"
	})
	for _, seen := range versions.get() {
		if hasIngress(seen) && seen.Annotations[baremetal.AnnotationAllocatedFromPool] != "first" {
			t.Errorf("version %s shows %v without the pool annotation (%v)", seen.ResourceVersion, ingressIPs(seen), seen.Annotations)
		}
	}
	// The pool is renamed: the same range, another object.
	if err := pools.Delete(context.Background(), "first", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	createPool(t, pools, "second", "198.51.100.64/30")
	moved := waitForService(t, client, "ann", "web", "names the new pool", func(s *v1.Service) bool {
		return s.Annotations[baremetal.AnnotationAllocatedFromPool] == "second"
	})
	if !slices.Equal(ingressIPs(moved), ingressIPs(web)) {
		t.Errorf("web moved from %v to %v", ingressIPs(web), ingressIPs(moved))
	}
	moved.Spec.Type = v1.ServiceTypeClusterIP
	for i := range moved.Spec.Ports {
		moved.Spec.Ports[i].NodePort = 0
	}
	if _, err := client.CoreV1().Services("ann").Update(context.Background(), moved, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForService(t, client, "ann", "web", "lost its addresses and the pool annotation", func(s *v1.Service) bool {
		_, annotated := s.Annotations[baremetal.AnnotationAllocatedFromPool]
		return !hasIngress(s) && !annotated
	})
	m.requireRunning(t)
}

// serviceVersions records every version of the Services of a namespace
// that a watch delivers.
type serviceVersions struct {
	mu   sync.Mutex
	seen []*v1.Service
}

func watchServices(t testing.TB, client kubernetes.Interface, namespace string) *serviceVersions {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w, err := client.CoreV1().Services(namespace).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v := &serviceVersions{}
	go func() {
		for event := range w.ResultChan() {
			if svc, ok := event.Object.(*v1.Service); ok {
				v.mu.Lock()
				v.seen = append(v.seen, svc)
				v.mu.Unlock()
			}
		}
	}()
	return v
}

func (v *serviceVersions) get() []*v1.Service {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.seen)
}
