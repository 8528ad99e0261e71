package ipam

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
)

// Pool is an address pool as configured by the user.
type Pool struct {
	Name       string
	Ranges     []Range
	AutoAssign bool // false: only used when named explicitly or for a requested specific IP
	// AvoidBuggyIPs skips IPv4 addresses ending in .0 or .255.
	AvoidBuggyIPs bool
	Priority      int      // lower value preferred; ties broken by Name
	Namespaces    []string // empty = all namespaces
	// NamespaceSelectors and ServiceSelectors: any match; empty = all.
	NamespaceSelectors []labels.Selector
	ServiceSelectors   []labels.Selector
}

// Conflict reports addresses configured in two pools. The addresses belong
// to Pool, the earlier in the configuration; Shadowed never hands them out.
type Conflict struct {
	Pool     string
	Shadowed string
	Overlap  Range
}

func (c Conflict) String() string {
	return fmt.Sprintf("pools %s and %s overlap in %s; %s keeps those addresses", c.Pool, c.Shadowed, c.Overlap, c.Pool)
}

// FamilyUsage counts the addresses of one family in a pool. Total saturates
// at MaxUint64 for huge IPv6 ranges. InUse counts the addresses services
// hold or that are reserved (held elsewhere), an address shared by several
// services once: Total - InUse is what Allocate can still hand out.
type FamilyUsage struct {
	Family Family
	Total  uint64
	InUse  uint64
}

// PoolUsage lists, for each family the pool serves (IPv4 first), its counts.
type PoolUsage struct {
	Name     string
	Families []FamilyUsage
}

type poolState struct {
	cfg    Pool
	ranges []*rangeState
	serves [2]bool
	total  [2]uint64
	inUse  [2]uint64
	// anycastInUse counts the Subnet-Router anycast addresses in use:
	// handed out only when asked for, so not in total until they are.
	anycastInUse uint64
}

// taken counts ip, now held or reserved, in the pool's usage.
func (p *poolState) taken(ip netip.Addr) {
	p.inUse[famIndex(FamilyOf(ip))]++
	if isSubnetRouterAnycast(ip) {
		p.anycastInUse++
	}
}

// freed undoes taken.
func (p *poolState) freed(ip netip.Addr) {
	p.inUse[famIndex(FamilyOf(ip))]--
	if isSubnetRouterAnycast(ip) {
		p.anycastInUse--
	}
}

func famIndex(f Family) int {
	if f == IPv6 {
		return 1
	}
	return 0
}

func (p *poolState) servesAll(fams []Family) bool {
	for _, f := range fams {
		if !p.serves[famIndex(f)] {
			return false
		}
	}
	return true
}

// scopeReason returns why the pool's scope excludes the request, or "".
func (p *poolState) scopeReason(r *request) string {
	c := &p.cfg
	if len(c.Namespaces) > 0 && !slices.Contains(c.Namespaces, r.Namespace) {
		return fmt.Sprintf("namespace %q is not one of the pool's namespaces [%s]", r.Namespace, strings.Join(c.Namespaces, ", "))
	}
	if !anyMatch(c.NamespaceSelectors, r.NamespaceLabels) {
		return fmt.Sprintf("the labels of namespace %q match none of the pool's namespace selectors", r.Namespace)
	}
	if !anyMatch(c.ServiceSelectors, r.ServiceLabels) {
		return "the service's labels match none of the pool's service selectors"
	}
	return ""
}

func anyMatch(sels []labels.Selector, l map[string]string) bool {
	if len(sels) == 0 {
		return true
	}
	set := labels.Set(l)
	for _, s := range sels {
		if s.Matches(set) {
			return true
		}
	}
	return false
}

// poolSet is one validated configuration.
type poolSet struct {
	byName    map[string]*poolState
	ordered   []*poolState  // by Name: for reports
	preferred []*poolState  // by Priority, then Name: the search order
	ranges    []*rangeState // every range, in configuration order: the first holding an address owns it
	conflicts []Conflict
}

// buildPools validates pools. Their order is their seniority: of two pools
// holding an address, the earlier owns it and the later never hands it
// out, so a pool added later cannot take addresses in use.
func buildPools(pools []Pool) (*poolSet, error) {
	ps := &poolSet{byName: make(map[string]*poolState, len(pools))}
	for i := range pools {
		p, err := newPoolState(pools[i])
		if err != nil {
			return nil, err
		}
		if ps.byName[p.cfg.Name] != nil {
			return nil, fmt.Errorf("%w: pool %s is defined twice", ErrInvalidPool, p.cfg.Name)
		}
		ps.byName[p.cfg.Name] = p
		ps.ordered = append(ps.ordered, p)
		ps.ranges = append(ps.ranges, p.ranges...)
	}
	slices.SortFunc(ps.ordered, func(a, b *poolState) int { return strings.Compare(a.cfg.Name, b.cfg.Name) })
	ps.preferred = slices.Clone(ps.ordered)
	slices.SortStableFunc(ps.preferred, func(a, b *poolState) int { return cmp.Compare(a.cfg.Priority, b.cfg.Priority) })
	ps.computeOverlaps()
	for _, p := range ps.ordered {
		for _, rs := range p.ranges {
			i := famIndex(rs.r.Family())
			p.total[i] = satAdd(p.total[i], rs.total())
		}
	}
	return ps, nil
}

func newPoolState(c Pool) (*poolState, error) {
	if c.Name == "" {
		return nil, fmt.Errorf("%w: a pool has no name", ErrInvalidPool)
	}
	if len(c.Ranges) == 0 {
		return nil, fmt.Errorf("%w: pool %s has no address ranges", ErrInvalidPool, c.Name)
	}
	for _, s := range slices.Concat(c.NamespaceSelectors, c.ServiceSelectors) {
		if s == nil {
			return nil, fmt.Errorf("%w: pool %s has a nil selector", ErrInvalidPool, c.Name)
		}
	}
	// Copy the slices so a caller reusing its config cannot change ours.
	c.Ranges = slices.Clone(c.Ranges)
	c.Namespaces = slices.Clone(c.Namespaces)
	c.NamespaceSelectors = slices.Clone(c.NamespaceSelectors)
	c.ServiceSelectors = slices.Clone(c.ServiceSelectors)
	p := &poolState{cfg: c}
	for _, r := range c.Ranges {
		if err := r.validate(); err != nil {
			return nil, fmt.Errorf("pool %s: %w", c.Name, err)
		}
		p.serves[famIndex(r.Family())] = true
		p.ranges = append(p.ranges, newRangeState(p, r))
	}
	return p, nil
}

// computeOverlaps gives each address to the first range (in configuration
// order) holding it; later ranges skip it. This also tolerates a pool
// listing overlapping ranges of its own.
func (ps *poolSet) computeOverlaps() {
	for j, later := range ps.ranges {
		for _, earlier := range ps.ranges[:j] {
			ov, ok := earlier.r.overlap(later.r)
			if !ok {
				continue
			}
			later.excluded = append(later.excluded, ov)
			if earlier.pool != later.pool {
				ps.conflicts = append(ps.conflicts, Conflict{Pool: earlier.pool.cfg.Name, Shadowed: later.pool.cfg.Name, Overlap: ov})
			}
		}
		later.excluded = mergeRanges(later.excluded)
	}
}

func mergeRanges(rs []Range) []Range {
	if len(rs) < 2 {
		return rs
	}
	slices.SortFunc(rs, func(a, b Range) int { return a.First.Compare(b.First) })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		next := last.Last.Next()
		if r.First.Compare(last.Last) <= 0 || (next.IsValid() && r.First == next) {
			if last.Last.Less(r.Last) {
				last.Last = r.Last
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// owner returns the range that hands out a, or nil when no pool does.
func (ps *poolSet) owner(a netip.Addr) *rangeState {
	for _, rs := range ps.ranges {
		if !rs.r.Contains(a) {
			continue
		}
		// The first range containing a is its owner: later ones exclude it.
		if rs.pool.cfg.AvoidBuggyIPs && isBuggy(a) {
			return nil
		}
		return rs
	}
	return nil
}

// notOwnedReason explains why owner(a) is nil, for error messages.
func (ps *poolSet) notOwnedReason(a netip.Addr) (pool, reason string) {
	for _, rs := range ps.ranges {
		if rs.r.Contains(a) && rs.pool.cfg.AvoidBuggyIPs && isBuggy(a) {
			return rs.pool.cfg.Name, "the pool avoids IPv4 addresses ending in .0 or .255"
		}
	}
	return "", "no configured pool contains it"
}
