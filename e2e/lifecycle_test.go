package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	baremetal "github.com/heraldlb/herald/bare-metal"
	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/claims"
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
	lab := startPoolCCM(t, "queue", "pair", "198.51.100.40/31")
	client, pools, m := lab.client, lab.pools, lab.ccm
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

// serviceEvents lists the events of a Service.
func serviceEvents(t testing.TB, client kubernetes.Interface, namespace, name string) []v1.Event {
	t.Helper()
	events, err := client.CoreV1().Events(namespace).List(context.Background(), metav1.ListOptions{
		FieldSelector: "involvedObject.kind=Service,involvedObject.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	return events.Items
}

// eventTotal counts the events (with their repetitions) of the given reasons,
// or of every reason when none is given.
func eventTotal(events []v1.Event, reasons ...string) int {
	n := 0
	for _, e := range events {
		if len(reasons) == 0 || slices.Contains(reasons, e.Reason) {
			n += int(max(e.Count, 1))
		}
	}
	return n
}

// verdicts are the event reasons that say what became of a Service's
// address.
var verdicts = []string{baremetal.ReasonIPAllocated, baremetal.ReasonAllocationFailed, baremetal.ReasonAddressOutsidePools}

// waitForVerdict waits until the Service has more verdict events than
// before: proof that a controller decided on its address.
func waitForVerdict(t testing.TB, client kubernetes.Interface, namespace, name string, before int) []v1.Event {
	t.Helper()
	var events []v1.Event
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, waitTimeout, true,
		func(context.Context) (bool, error) {
			events = serviceEvents(t, client, namespace, name)
			return eventTotal(events, verdicts...) > before, nil
		})
	if err != nil {
		t.Fatalf("no new %v event for Service %s/%s within %v (had %d): %v", verdicts, namespace, name, waitTimeout, before, reasons(events))
	}
	return events
}

func reasons(events []v1.Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, fmt.Sprintf("%s %s x%d: %s", e.Type, e.Reason, e.Count, e.Message))
	}
	return out
}

func condition(svc *v1.Service) *metav1.Condition {
	return meta.FindStatusCondition(svc.Status.Conditions, baremetal.ConditionAddressAllocated)
}

// A restart keeps the addresses Services show even when their pool was
// deleted or shrunk meanwhile (defect 2): the restarted CCM reports them
// as outside every pool and writes nothing else.
func TestRestartKeepsAddressesOutsideEveryPool(t *testing.T) {
	c, client, pools := startPoolLab(t)
	createPool(t, pools, "blue", "198.51.100.48/30")
	createPool(t, pools, "shrink", "198.51.100.52/30")
	m := startCCM(t, c, "backend: bare-metal\n")
	createNamespace(t, client, "keep")
	// plain names no pool and gets one of blue, the first by name.
	wanted := map[string]map[string]string{"plain": nil, "named": inPool("blue"), "shrunk": inPool("shrink")}
	for name, annotations := range wanted {
		createService(t, client, newService("keep", name, v1.ServiceTypeLoadBalancer, annotations))
	}
	before := map[string]*v1.Service{}
	for name := range wanted {
		before[name] = waitForService(t, client, "keep", name, "has an ingress IP", hasIngress)
	}
	if err := pools.Delete(context.Background(), "blue", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	patchPoolAddresses(t, pools, "shrink", "198.51.100.54/31") // no longer holds shrunk's address
	m.stop()
	events, outside := map[string]int{}, map[string]int{}
	for name := range wanted {
		before := serviceEvents(t, client, "keep", name)
		events[name] = eventTotal(before, verdicts...)
		outside[name] = eventTotal(before, baremetal.ReasonAddressOutsidePools)
	}

	restarted := startCCM(t, c, "backend: bare-metal\n")
	for name, old := range before {
		// The restarted CCM's verdict on the Service.
		after := waitForVerdict(t, client, "keep", name, events[name])
		now, err := client.CoreV1().Services("keep").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ingressIPs(now), ingressIPs(old)) {
			t.Errorf("%s was renumbered by the restart: %v -> %v", name, ingressIPs(old), ingressIPs(now))
		}
		if got := eventTotal(after, baremetal.ReasonIPAllocated); got != 1 {
			t.Errorf("%s has %d IPAllocated events, want only the first", name, got)
		}
		if eventTotal(after, baremetal.ReasonAddressOutsidePools) <= outside[name] {
			t.Errorf("%s: the restarted CCM's verdict is not %s; events: %v", name, baremetal.ReasonAddressOutsidePools, reasons(after))
		}
		if cond := condition(now); cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != baremetal.ReasonAddressOutsidePools {
			t.Errorf("%s: condition %+v, want True/%s", name, cond, baremetal.ReasonAddressOutsidePools)
		}
	}
	restarted.requireRunning(t)
}

// An address left outside every pool by a shrunk pool is reported (a
// Warning, the condition's reason, a metric) and kept (defect 3).
func TestAddressOutsideEveryPoolIsReported(t *testing.T) {
	lab := startPoolCCM(t, "orphan", "edge", "198.51.100.56/30")
	client, pools, m := lab.client, lab.pools, lab.ccm
	createService(t, client, newService("orphan", "web", v1.ServiceTypeLoadBalancer, inPool("edge")))
	web := waitForService(t, client, "orphan", "web", "has an ingress IP", hasIngress)
	m.waitForGauge(t, "herald_addresses_outside_pools", map[string]string{"family": "IPv4"}, 0)

	patchPoolAddresses(t, pools, "edge", "198.51.100.58/31")
	message := waitForEvent(t, client, "orphan", "web", v1.EventTypeWarning, baremetal.ReasonAddressOutsidePools)
	if !strings.Contains(message, ingressIPs(web)[0]) || !strings.Contains(message, "edge") {
		t.Errorf("%s message %q names neither the address nor its pool", baremetal.ReasonAddressOutsidePools, message)
	}
	now := waitForService(t, client, "orphan", "web", "reports the address outside every pool", func(s *v1.Service) bool {
		cond := condition(s)
		return cond != nil && cond.Status == metav1.ConditionTrue && cond.Reason == baremetal.ReasonAddressOutsidePools
	})
	if !slices.Equal(ingressIPs(now), ingressIPs(web)) {
		t.Errorf("web moved from %v to %v", ingressIPs(web), ingressIPs(now))
	}
	m.waitForGauge(t, "herald_addresses_outside_pools", map[string]string{"family": "IPv4"}, 1)
	m.waitForGauge(t, "herald_pool_addresses_in_use", map[string]string{"pool": "edge", "family": "IPv4"}, 0)
	waitForPool(t, pools, "edge", "counts 2 addresses, none in use", func(p *v1alpha1.IPAddressPool) bool {
		return p.Status.IPv4 != nil && *p.Status.IPv4 == v1alpha1.AddressCounts{Total: 2, InUse: 0, Free: 2}
	})
	m.requireRunning(t)
}

// A newer pool overlapping an older one gets none of the overlap: the
// older pool (config pools first, then by creation) keeps its addresses,
// whatever the names (defect 4).
func TestOlderPoolKeepsOverlappingAddresses(t *testing.T) {
	c, client, pools := startPoolLab(t)
	createPool(t, pools, "tiny", "198.51.100.120/30")
	m := startCCM(t, c, twoPools) // config pool main: 198.51.100.10-19
	createNamespace(t, client, "overlap")
	createService(t, client, newService("overlap", "one", v1.ServiceTypeLoadBalancer, inPool("tiny")))
	waitForService(t, client, "overlap", "one", "has an ingress IP", hasIngress)
	// The status refresh comes a second after the allocation: the next
	// pools are created in a later second than tiny.
	waitForPool(t, pools, "tiny", "counts one address in use", func(p *v1alpha1.IPAddressPool) bool {
		return p.Status.IPv4 != nil && p.Status.IPv4.InUse == 1
	})

	createPool(t, pools, "aaa", "198.51.100.112/28") // covers tiny, sorts before it
	createPool(t, pools, "aab", "198.51.100.16/30")  // inside the config pool main
	waitForPool(t, pools, "aaa", "is Conflicting with tiny and has none of its addresses", func(p *v1alpha1.IPAddressPool) bool {
		cond := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionConflicting)
		return cond != nil && cond.Status == metav1.ConditionTrue && strings.Contains(cond.Message, "tiny") &&
			p.Status.IPv4 != nil && p.Status.IPv4.Total == 12
	})
	waitForPool(t, pools, "aab", "is Conflicting with main and has no address", func(p *v1alpha1.IPAddressPool) bool {
		cond := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionConflicting)
		return cond != nil && cond.Status == metav1.ConditionTrue && strings.Contains(cond.Message, "main") &&
			p.Status.IPv4 != nil && p.Status.IPv4.Total == 0
	})
	tiny := waitForPool(t, pools, "tiny", "keeps its 4 addresses", func(p *v1alpha1.IPAddressPool) bool {
		return p.Status.IPv4 != nil && p.Status.IPv4.Total == 4
	})
	if *tiny.Status.IPv4 != (v1alpha1.AddressCounts{Total: 4, InUse: 1, Free: 3}) {
		t.Errorf("tiny counts %+v, want 4 total, 1 in use", *tiny.Status.IPv4)
	}
	createService(t, client, newService("overlap", "two", v1.ServiceTypeLoadBalancer, inPool("tiny")))
	two := waitForService(t, client, "overlap", "two", "has an address of tiny", hasIngress)
	if got := ingressIPs(two); !slices.Equal(got, []string{"198.51.100.121"}) {
		t.Errorf("two got %v, want tiny's next address 198.51.100.121", got)
	}
	specific := map[string]string{service.AnnotationLoadBalancerIPs: "198.51.100.17"}
	createService(t, client, newService("overlap", "specific", v1.ServiceTypeLoadBalancer, specific))
	if message := waitForEvent(t, client, "overlap", "specific", v1.EventTypeNormal, baremetal.ReasonIPAllocated); !strings.Contains(message, "pool main") {
		t.Errorf("198.51.100.17 came from another pool than main: %q", message)
	}
	m.requireRunning(t)
}

// An address another instance claimed counts as in use in the pool's
// status and metrics, as the allocator treats it (defect 5).
func TestPoolUsageCountsClaimedAddresses(t *testing.T) {
	c, client, pools := startPoolLab(t)
	createPool(t, pools, "two", "198.51.100.60/31")
	holders, err := json.Marshal([]map[string]any{{"service": "elsewhere/svc", "uid": "u-1", "renewed": time.Now().UTC().Format(time.RFC3339)}})
	if err != nil {
		t.Fatal(err)
	}
	claim := &networkingv1.IPAddress{
		ObjectMeta: metav1.ObjectMeta{Name: "198.51.100.60",
			Labels:      map[string]string{networkingv1.LabelManagedBy: claims.Manager},
			Annotations: map[string]string{claims.AnnotationHolders: string(holders)}},
		Spec: networkingv1.IPAddressSpec{ParentRef: &networkingv1.ParentReference{Resource: "services", Namespace: "elsewhere", Name: "svc"}},
	}
	if _, err := client.NetworkingV1().IPAddresses().Create(context.Background(), claim, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	m := startCCM(t, c, "backend: bare-metal\n")
	waitForPool(t, pools, "two", "counts the claimed address in use", func(p *v1alpha1.IPAddressPool) bool {
		return p.Status.IPv4 != nil && *p.Status.IPv4 == v1alpha1.AddressCounts{Total: 2, InUse: 1, Free: 1}
	})
	m.waitForGauge(t, "herald_pool_addresses_in_use", map[string]string{"pool": "two", "family": "IPv4"}, 1)

	createNamespace(t, client, "usage")
	createService(t, client, newService("usage", "a", v1.ServiceTypeLoadBalancer, inPool("two")))
	a := waitForService(t, client, "usage", "a", "has an ingress IP", hasIngress)
	if got := ingressIPs(a); !slices.Equal(got, []string{"198.51.100.61"}) {
		t.Errorf("a got %v, want the unclaimed 198.51.100.61", got)
	}
	waitForPool(t, pools, "two", "is full", func(p *v1alpha1.IPAddressPool) bool {
		return p.Status.IPv4 != nil && *p.Status.IPv4 == v1alpha1.AddressCounts{Total: 2, InUse: 2, Free: 0}
	})
	m.waitForGauge(t, "herald_pool_addresses_in_use", map[string]string{"pool": "two", "family": "IPv4"}, 2)
	createService(t, client, newService("usage", "b", v1.ServiceTypeLoadBalancer, inPool("two")))
	waitForEvent(t, client, "usage", "b", v1.EventTypeWarning, baremetal.ReasonAllocationFailed)
	m.requireRunning(t)
}

// A control character in an annotation reaches the event and the
// condition escaped, and the condition turns False: a failed status write
// never leaves a stale True (defect 6).
func TestControlCharactersAreEscapedInMessages(t *testing.T) {
	_, client, m := startLab(t, twoPools)
	createNamespace(t, client, "ctl")
	createService(t, client, newService("ctl", "web", v1.ServiceTypeLoadBalancer, inPool("main")))
	web := waitForService(t, client, "ctl", "web", "has a True condition", func(s *v1.Service) bool {
		cond := condition(s)
		return hasIngress(s) && cond != nil && cond.Status == metav1.ConditionTrue
	})
	// U+009B (CSI): YAML, in which server-side apply patches are
	// decoded, refuses C1 control characters.
	web.Annotations[service.AnnotationAddressPool] = "main\u009bx"
	if _, err := client.CoreV1().Services("ctl").Update(context.Background(), web, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	message := waitForEvent(t, client, "ctl", "web", v1.EventTypeWarning, baremetal.ReasonAllocationFailed)
	if !strings.Contains(message, `main\u009bx`) {
		t.Errorf("event message %q does not show the control character escaped", message)
	}
	now := waitForService(t, client, "ctl", "web", "has a False condition", func(s *v1.Service) bool {
		cond := condition(s)
		return cond != nil && cond.Status == metav1.ConditionFalse && cond.Reason == baremetal.ReasonAllocationFailed
	})
	if cond := condition(now); !strings.Contains(cond.Message, `main\u009bx`) {
		t.Errorf("condition message %q does not show the control character escaped", cond.Message)
	}
	m.requireRunning(t)
}

// An IPv6 pool does not hand out the Subnet-Router anycast address (all
// zeros in the interface identifier) unless a Service asks for it by name
// (defect 7).
func TestIPv6PoolSkipsSubnetRouterAnycast(t *testing.T) {
	_, client, m := startLab(t, configWithPool("six", "2001:db8:100::/120"))
	createNamespace(t, client, "six")
	auto := newService("six", "auto", v1.ServiceTypeLoadBalancer, nil)
	auto.Spec.IPFamilies = []v1.IPFamily{v1.IPv6Protocol}
	createService(t, client, auto)
	if got := ingressIPs(waitForService(t, client, "six", "auto", "has an ingress IP", hasIngress)); !slices.Equal(got, []string{"2001:db8:100::1"}) {
		t.Errorf("auto got %v, want 2001:db8:100::1", got)
	}
	named := newService("six", "named", v1.ServiceTypeLoadBalancer, map[string]string{service.AnnotationLoadBalancerIPs: "2001:db8:100::"})
	named.Spec.IPFamilies = []v1.IPFamily{v1.IPv6Protocol}
	createService(t, client, named)
	if got := ingressIPs(waitForService(t, client, "six", "named", "has an ingress IP", hasIngress)); !slices.Equal(got, []string{"2001:db8:100::"}) {
		t.Errorf("named got %v, want the 2001:db8:100:: it asked for", got)
	}
	m.requireRunning(t)
}

// herald-ccm records on each Service the pool its addresses came from,
// before status shows them, follows a change of pool, and removes the
// record with the addresses: node agents read it to pick the
// L2Advertisement of a VIP.
func TestAllocatedFromPoolAnnotation(t *testing.T) {
	lab := startPoolCCM(t, "ann", "first", "198.51.100.64/30")
	client, pools, m := lab.client, lab.pools, lab.ccm
	versions := watchServices(t, client, "ann")
	createService(t, client, newService("ann", "web", v1.ServiceTypeLoadBalancer, nil))
	web := waitForService(t, client, "ann", "web", "has an ingress IP and the pool annotation", func(s *v1.Service) bool {
		return hasIngress(s) && s.Annotations[v1alpha1.AnnotationAllocatedFromPool] == "first"
	})
	for _, seen := range versions.get() {
		if hasIngress(seen) && seen.Annotations[v1alpha1.AnnotationAllocatedFromPool] != "first" {
			t.Errorf("version %s shows %v without the pool annotation (%v)", seen.ResourceVersion, ingressIPs(seen), seen.Annotations)
		}
	}
	// The pool is renamed: the same range, another object.
	if err := pools.Delete(context.Background(), "first", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	createPool(t, pools, "second", "198.51.100.64/30")
	moved := waitForService(t, client, "ann", "web", "names the new pool", func(s *v1.Service) bool {
		return s.Annotations[v1alpha1.AnnotationAllocatedFromPool] == "second"
	})
	if !slices.Equal(ingressIPs(moved), ingressIPs(web)) {
		t.Errorf("web moved from %v to %v", ingressIPs(web), ingressIPs(moved))
	}
	toClusterIP(t, client, moved)
	waitForService(t, client, "ann", "web", "lost its addresses and the pool annotation", func(s *v1.Service) bool {
		_, annotated := s.Annotations[v1alpha1.AnnotationAllocatedFromPool]
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
