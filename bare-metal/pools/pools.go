// Package pools turns IPAddressPool objects into the allocator's pools and
// reports back in their status how the allocator uses them; its Controller
// watches the objects.
package pools

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/ipam"
)

// noPriority is where a pool without a priority sorts: MetalLB users
// expect such pools to be tried after every pool that has one.
const noPriority = math.MaxInt32

// AllocatorPriority maps a user's priority (1 first, 0 for none) to the
// allocator's order (lowest first).
func AllocatorPriority(p int32) int {
	if p <= 0 {
		return noPriority
	}
	return int(p)
}

// FromObject converts an IPAddressPool into the allocator's pool. The
// error says which field is wrong, for the pool's Ready condition.
func FromObject(obj *v1alpha1.IPAddressPool) (ipam.Pool, error) {
	pool := ipam.Pool{
		Name:          obj.Name,
		AutoAssign:    obj.Spec.AutoAssignEnabled(),
		AvoidBuggyIPs: obj.Spec.AvoidBuggyIPs,
		Priority:      noPriority,
	}
	for i, s := range obj.Spec.Addresses {
		r, err := ipam.ParseRange(s)
		if err != nil {
			return ipam.Pool{}, fmt.Errorf("spec.addresses[%d]: %w", i, err)
		}
		pool.Ranges = append(pool.Ranges, r)
	}
	if sa := obj.Spec.ServiceAllocation; sa != nil {
		pool.Priority = AllocatorPriority(sa.Priority)
		pool.Namespaces = slices.Clone(sa.Namespaces)
		for i := range sa.NamespaceSelectors {
			sel, err := metav1.LabelSelectorAsSelector(&sa.NamespaceSelectors[i])
			if err != nil {
				return ipam.Pool{}, fmt.Errorf("spec.serviceAllocation.namespaceSelectors[%d]: %w", i, err)
			}
			pool.NamespaceSelectors = append(pool.NamespaceSelectors, sel)
		}
		for i := range sa.ServiceSelectors {
			sel, err := metav1.LabelSelectorAsSelector(&sa.ServiceSelectors[i])
			if err != nil {
				return ipam.Pool{}, fmt.Errorf("spec.serviceAllocation.serviceSelectors[%d]: %w", i, err)
			}
			pool.ServiceSelectors = append(pool.ServiceSelectors, sel)
		}
	}
	return pool, nil
}

// Set is the pools the allocator should have: those of the cloud config
// and the valid IPAddressPools, plus why the others were left out.
type Set struct {
	Pools   []ipam.Pool
	Invalid map[string]string // IPAddressPool name -> reason it is not used
}

// Desired merges config pools with IPAddressPool objects. A config pool's
// name wins: the file is what the operator deployed with. The pools are in
// order of seniority, which decides who keeps addresses two pools hold:
// config pools first, then objects by creation (then name), so a pool
// created later never takes addresses from one in use.
func Desired(config []ipam.Pool, objects []*v1alpha1.IPAddressPool) Set {
	set := Set{Pools: slices.Clone(config), Invalid: map[string]string{}}
	objects = slices.Clone(objects)
	slices.SortStableFunc(objects, func(a, b *v1alpha1.IPAddressPool) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	configNames := map[string]bool{}
	for _, p := range config {
		configNames[p.Name] = true
	}
	for _, obj := range objects {
		if obj.DeletionTimestamp != nil {
			continue
		}
		if configNames[obj.Name] {
			set.Invalid[obj.Name] = "a pool of this name is defined in herald-ccm's cloud config"
			continue
		}
		pool, err := FromObject(obj)
		if err != nil {
			set.Invalid[obj.Name] = err.Error()
			continue
		}
		set.Pools = append(set.Pools, pool)
	}
	return set
}

// Report is what the allocator made of a Set.
type Report struct {
	Set       Set
	Conflicts []ipam.Conflict
	Usage     []ipam.PoolUsage
}

// Status computes an IPAddressPool's status from the allocator's view.
// Conditions keep their transition time when their status is unchanged.
func Status(obj *v1alpha1.IPAddressPool, r Report, now metav1.Time) v1alpha1.IPAddressPoolStatus {
	status := v1alpha1.IPAddressPoolStatus{
		ObservedGeneration: obj.Generation,
		Conditions:         slices.Clone(obj.Status.Conditions),
	}
	setCondition := func(t string, s metav1.ConditionStatus, reason, message string) {
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason,
			Message: message, ObservedGeneration: obj.Generation, LastTransitionTime: now})
	}
	if reason, bad := r.Set.Invalid[obj.Name]; bad {
		setCondition(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonInvalidAddresses, reason)
		meta.RemoveStatusCondition(&status.Conditions, v1alpha1.ConditionConflicting)
		return status
	}
	setCondition(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonValid, "addresses are in use by the allocator")
	var overlaps []string
	for _, c := range r.Conflicts {
		switch obj.Name {
		case c.Pool:
			overlaps = append(overlaps, fmt.Sprintf("%s overlaps pool %s, which does not hand them out", c.Overlap, c.Shadowed))
		case c.Shadowed:
			overlaps = append(overlaps, fmt.Sprintf("%s overlaps pool %s, which is older and keeps them", c.Overlap, c.Pool))
		}
	}
	if len(overlaps) > 0 {
		setCondition(v1alpha1.ConditionConflicting, metav1.ConditionTrue, v1alpha1.ReasonOverlap, strings.Join(overlaps, "; "))
	} else {
		setCondition(v1alpha1.ConditionConflicting, metav1.ConditionFalse, v1alpha1.ReasonNoOverlap, "no address is in another pool")
	}
	for _, u := range r.Usage {
		if u.Name != obj.Name {
			continue
		}
		for _, f := range u.Families {
			counts := v1alpha1.NewAddressCounts(f.Total, f.InUse)
			if f.Family == ipam.IPv4 {
				status.IPv4 = &counts
			} else {
				status.IPv6 = &counts
			}
		}
	}
	return status
}
