package pools

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/ipam"
)

func poolObject(name string, priority int32, addresses ...string) *v1alpha1.IPAddressPool {
	obj := &v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 2},
		Spec: v1alpha1.IPAddressPoolSpec{Addresses: addresses}}
	if priority != 0 {
		obj.Spec.ServiceAllocation = &v1alpha1.ServiceAllocation{Priority: priority}
	}
	return obj
}

func TestPoolFromObject(t *testing.T) {
	off := false
	obj := poolObject("gold", 3, "198.51.100.0/30", "2001:db8::1-2001:db8::2")
	obj.Spec.AutoAssign = &off
	obj.Spec.AvoidBuggyIPs = true
	obj.Spec.ServiceAllocation.Namespaces = []string{"web"}
	obj.Spec.ServiceAllocation.ServiceSelectors = []metav1.LabelSelector{{MatchLabels: map[string]string{"tier": "edge"}}}
	pool, err := FromObject(obj)
	if err != nil {
		t.Fatal(err)
	}
	if pool.Name != "gold" || pool.AutoAssign || !pool.AvoidBuggyIPs || pool.Priority != 3 || len(pool.Ranges) != 2 ||
		pool.Ranges[1].First != netip.MustParseAddr("2001:db8::1") || len(pool.ServiceSelectors) != 1 ||
		pool.ServiceSelectors[0].String() != "tier=edge" || pool.Namespaces[0] != "web" {
		t.Fatalf("pool = %+v", pool)
	}
	unprioritised, err := FromObject(poolObject("plain", 0, "203.0.113.0/24"))
	if err != nil || unprioritised.Priority != noPriority || !unprioritised.AutoAssign {
		t.Fatalf("pool without priority = %+v, %v; want it after every prioritised pool, auto-assigning", unprioritised, err)
	}
	if _, err := FromObject(poolObject("bad", 0, "198.51.100.0/30", "198.51.100.9-198.51.100.1")); err == nil ||
		!strings.Contains(err.Error(), "spec.addresses[1]") {
		t.Fatalf("reversed range: error %v, want it to name spec.addresses[1]", err)
	}
}

func TestDesiredPools(t *testing.T) {
	config := []ipam.Pool{{Name: "from-file", AutoAssign: true}}
	deleting := poolObject("going", 0, "203.0.113.0/28")
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	set := Desired(config, []*v1alpha1.IPAddressPool{
		poolObject("from-file", 0, "198.51.100.0/28"),
		poolObject("good", 1, "198.51.100.16/28"),
		poolObject("broken", 0, "nope"),
		deleting,
	})
	var names []string
	for _, p := range set.Pools {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != "from-file,good" {
		t.Errorf("pools = %v, want the config pool and the valid object", names)
	}
	if len(set.Invalid) != 2 || !strings.Contains(set.Invalid["from-file"], "cloud config") || set.Invalid["broken"] == "" {
		t.Errorf("invalid = %v", set.Invalid)
	}
}

// Pools come in order of seniority: config pools, then objects by
// creation, then by name; the allocator gives overlaps to the first.
func TestDesiredPoolsBySeniority(t *testing.T) {
	at := func(obj *v1alpha1.IPAddressPool, minute int) *v1alpha1.IPAddressPool {
		obj.CreationTimestamp = metav1.NewTime(time.Date(2026, 1, 1, 0, minute, 0, 0, time.UTC))
		return obj
	}
	set := Desired([]ipam.Pool{{Name: "zz-config", AutoAssign: true}}, []*v1alpha1.IPAddressPool{
		at(poolObject("aaa-new", 0, "198.51.100.0/28"), 5),
		at(poolObject("tiny-old", 0, "198.51.100.4/30"), 1),
		at(poolObject("b-same-minute", 0, "203.0.113.0/28"), 5),
	})
	var names []string
	for _, p := range set.Pools {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != "zz-config,tiny-old,aaa-new,b-same-minute" {
		t.Errorf("pools in order %v, want the config pool, then by creation, then by name", names)
	}
}

func TestPoolStatus(t *testing.T) {
	now := metav1.NewTime(time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC))
	a, b := poolObject("a", 0, "198.51.100.0/28"), poolObject("b", 0, "198.51.100.8/29")
	set := Set{Invalid: map[string]string{"c": "spec.addresses[0]: bad"}}
	conflicts := []ipam.Conflict{{Pool: "a", Shadowed: "b",
		Overlap: ipam.Range{First: netip.MustParseAddr("198.51.100.8"), Last: netip.MustParseAddr("198.51.100.15")}}}
	usage := []ipam.PoolUsage{{Name: "a", Families: []ipam.FamilyUsage{{Family: ipam.IPv4, Total: 16, InUse: 3}}}}

	report := Report{Set: set, Conflicts: conflicts, Usage: usage}
	status := Status(a, report, now)
	if status.IPv4 == nil || *status.IPv4 != (v1alpha1.AddressCounts{Total: 16, InUse: 3, Free: 13}) || status.IPv6 != nil {
		t.Errorf("counts = %+v / %+v", status.IPv4, status.IPv6)
	}
	if !meta.IsStatusConditionTrue(status.Conditions, v1alpha1.ConditionReady) || status.ObservedGeneration != 2 {
		t.Errorf("a not Ready: %+v", status)
	}
	if c := meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionConflicting); c == nil ||
		c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "pool b") {
		t.Errorf("a Conflicting = %+v", c)
	}
	if c := meta.FindStatusCondition(Status(b, report, now).Conditions, v1alpha1.ConditionConflicting); c == nil ||
		!strings.Contains(c.Message, "which is older and keeps them") {
		t.Errorf("b Conflicting = %+v", c)
	}
	broken := Status(poolObject("c", 0, "x"), Report{Set: set}, now)
	if c := meta.FindStatusCondition(broken.Conditions, v1alpha1.ConditionReady); c == nil ||
		c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonInvalidAddresses || c.Message != "spec.addresses[0]: bad" {
		t.Errorf("c Ready = %+v", c)
	}
	// Recomputing an unchanged status keeps the transition time, so it is not rewritten.
	a.Status = status
	later := Status(a, report, metav1.NewTime(now.Add(time.Hour)))
	if !later.Conditions[0].LastTransitionTime.Equal(&now) {
		t.Errorf("transition time moved: %v", later.Conditions[0].LastTransitionTime)
	}
}
