package baremetal

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/heraldlb/herald/bare-metal/ipam"
	"github.com/heraldlb/herald/bare-metal/pools"
)

// Config is the bare-metal section of the cloud config file.
type Config struct {
	// Pools are address pools from the config file; IPAddressPool objects
	// add to them. A config pool's name cannot be reused by an object.
	Pools []PoolConfig `json:"pools"`
}

// PoolConfig is one address pool.
type PoolConfig struct {
	Name string `json:"name"`
	// Addresses are CIDRs ("192.0.2.0/28") or ranges ("192.0.2.10-192.0.2.20"),
	// IPv4 and IPv6.
	Addresses []string `json:"addresses"`
	// AutoAssign false keeps the pool for Services that name it or ask for
	// one of its addresses. Defaults to true.
	AutoAssign *bool `json:"autoAssign,omitempty"`
	// AvoidBuggyIPs skips IPv4 addresses ending in .0 and .255, which some
	// old client stacks treat as broadcast.
	AvoidBuggyIPs bool `json:"avoidBuggyIPs,omitempty"`
	// Priority orders pools for Services that name none, as in
	// IPAddressPool and MetalLB: 1 first, then 2, ...; 0 (unset) after all
	// pools that have one.
	Priority int32 `json:"priority,omitempty"`
}

// AddressPools validates the config and returns the allocator's pools. Every
// problem is reported with the path of the field that has it.
func (c *Config) AddressPools(path *field.Path) ([]ipam.Pool, field.ErrorList) {
	var errs field.ErrorList
	poolsPath := path.Child("pools")
	seen := map[string]bool{}
	var configured []ipam.Pool
	for i, pc := range c.Pools {
		p := poolsPath.Index(i)
		switch {
		case pc.Name == "":
			errs = append(errs, field.Required(p.Child("name"), ""))
		case seen[pc.Name]:
			errs = append(errs, field.Duplicate(p.Child("name"), pc.Name))
		}
		seen[pc.Name] = true
		if len(pc.Addresses) == 0 {
			errs = append(errs, field.Required(p.Child("addresses"), "list CIDRs or first-last ranges"))
		}
		if pc.Priority < 0 {
			errs = append(errs, field.Invalid(p.Child("priority"), pc.Priority, "must be 0 (none) or positive"))
		}
		pool := ipam.Pool{Name: pc.Name, AutoAssign: pc.AutoAssign == nil || *pc.AutoAssign,
			AvoidBuggyIPs: pc.AvoidBuggyIPs, Priority: pools.AllocatorPriority(pc.Priority)}
		for j, s := range pc.Addresses {
			r, err := ipam.ParseRange(s)
			if err != nil {
				errs = append(errs, field.Invalid(p.Child("addresses").Index(j), s, err.Error()))
				continue
			}
			pool.Ranges = append(pool.Ranges, r)
		}
		configured = append(configured, pool)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	// Overlapping pools would hand the same address out twice in a user's
	// mind even though the allocator resolves it: refuse at start.
	alloc, err := ipam.New(configured)
	if err != nil {
		return nil, append(errs, field.Invalid(poolsPath, "", err.Error()))
	}
	for _, c := range alloc.Conflicts() {
		errs = append(errs, field.Invalid(poolsPath, c.Shadowed, fmt.Sprintf("overlaps pool %s in %s", c.Pool, c.Overlap)))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return configured, nil
}
