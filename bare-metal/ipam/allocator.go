// Package ipam hands out load-balancer addresses from pools: specific
// addresses, named pools, dual-stack from one pool, and address sharing
// between services with the same sharing key. It is pure: no I/O, no
// clocks, no randomness; the same calls give the same addresses.
package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"sync"
)

// Request describes what a Service needs.
type Request struct {
	Service         string // unique key, "namespace/name"
	Namespace       string
	NamespaceLabels map[string]string
	ServiceLabels   map[string]string
	// Families: one address per family, in this order (spec.ipFamilies).
	Families []Family
	// RequireAllFamilies is RequireDualStack. Without it (PreferDualStack)
	// the first family alone is used when no pool can serve all of them
	// (or the family of the one address in IPs, if there is one).
	RequireAllFamilies bool
	IPs                []netip.Addr // specific addresses, at most one per family
	Pool               string       // named pool, "" = any eligible
	SharingKey         string       // "" = no sharing
	Ports              []Port
	LocalTrafficPolicy bool // externalTrafficPolicy: Local
	// BackendKey identifies the backends; services sharing an address where
	// either has Local policy must have equal BackendKeys, because the
	// address is announced only from nodes with local endpoints.
	BackendKey string
}

// Assignment is what a service holds: one address per family, in the
// order of the request's families.
type Assignment struct {
	Pool string
	IPs  []netip.Addr
}

// Allocator is safe for concurrent use.
type Allocator struct {
	mu     sync.Mutex
	ps     *poolSet
	allocs map[string]*alloc
	used   map[netip.Addr]*ipState
	byKey  map[string]map[netip.Addr]struct{} // sharing key -> addresses
	// reserved holds addresses held outside this allocator (Reserve), by
	// address; their holders take part in every sharing check.
	reserved map[netip.Addr][]*alloc
}

// New validates pools and returns an allocator holding nothing. Overlaps
// are not errors; Conflicts reports them.
func New(pools []Pool) (*Allocator, error) {
	ps, err := buildPools(pools)
	if err != nil {
		return nil, err
	}
	return &Allocator{
		ps:     ps,
		allocs: map[string]*alloc{},
		used:   map[netip.Addr]*ipState{},
		byKey:  map[string]map[netip.Addr]struct{}{},

		reserved: map[netip.Addr][]*alloc{},
	}, nil
}

// SetPools replaces the configuration. On error nothing changes. Services
// keep their addresses even when no pool contains them any more, until
// they are released: a configuration edit must not renumber live services.
func (a *Allocator) SetPools(pools []Pool) ([]Conflict, error) {
	ps, err := buildPools(pools)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ps = ps
	for ip, st := range a.used {
		st.owner = ps.owner(ip)
		if st.owner != nil {
			st.owner.pool.inUse[famIndex(FamilyOf(ip))]++
		}
	}
	for _, al := range a.allocs {
		// Follow the address when it now belongs to another pool (a
		// renamed pool, say); keep the old name when no pool has it.
		if st := a.used[al.ips[0]]; st.owner != nil {
			al.pool = st.owner.pool.cfg.Name
		}
	}
	return slices.Clone(ps.conflicts), nil
}

// Conflicts returns the overlaps of the current configuration.
func (a *Allocator) Conflicts() []Conflict {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.ps.conflicts)
}

// Allocate gives the service addresses for req. It is idempotent: an
// assignment that still satisfies req is returned unchanged. Otherwise the
// service moves, all or nothing: on error it keeps what it had, and a
// moving service keeps whichever of its addresses still fit.
//
// "Satisfies" means: same families (or the PreferDualStack single family,
// which grows to dual-stack from its own pool when that becomes possible),
// the requested addresses and pool, and sharing still compatible with the
// co-holders. Pool scope and autoAssign are not rechecked, and a pool that
// was removed still satisfies a request that does not name another pool:
// editing pools must not renumber live services; Release and Allocate to
// migrate one on purpose.
func (a *Allocator) Allocate(req Request) (Assignment, error) {
	r, err := normalize(req)
	if err != nil {
		return Assignment{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := a.allocs[r.Service]
	if cur != nil {
		switch a.fit(cur, r) {
		case fitExact:
			if sameUse(cur, r.use) {
				return cur.assignment(), nil
			}
			return a.replace(cur, r.newAlloc(cur.pool, cur.ips)), nil
		case fitFallback:
			return a.tryUpgrade(cur, r), nil
		}
	}
	a.uncommit(r.Service)
	al, err := a.find(r, cur)
	if fb, ok := r.fallback(); ok && (errors.Is(err, ErrFamilyUnavailable) || errors.Is(err, ErrPoolExhausted)) {
		al, err = a.find(fb, cur)
	}
	if err != nil {
		if cur != nil {
			a.commit(cur)
		}
		return Assignment{}, err
	}
	a.commit(al)
	return al.assignment(), nil
}

// Restore gives the service exactly ips, to rebuild state from Service
// status at start. Scope and autoAssign are not checked: the addresses are
// already in use on the network. req.Families, req.IPs and req.Pool are
// ignored; the assignment's pool is the one owning the first address.
func (a *Allocator) Restore(req Request, ips []netip.Addr) (Assignment, error) {
	req.Families, req.IPs = nil, ips
	r, err := normalize(req)
	if err != nil {
		return Assignment{}, err
	}
	if len(ips) == 0 {
		return Assignment{}, invalidRequest(req.Service, "no addresses to restore")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := a.uncommit(r.Service)
	al := r.newAlloc("", r.IPs)
	for i, ip := range al.ips {
		rs := a.ps.owner(ip)
		if rs == nil {
			pool, reason := a.ps.notOwnedReason(ip)
			err = &AddressError{Err: ErrNotInAnyPool, Service: r.Service, Addr: ip, Pool: pool, Reason: reason}
		} else {
			err = a.shareCheck(ip, al)
		}
		if err != nil {
			if cur != nil {
				a.commit(cur)
			}
			return Assignment{}, err
		}
		if i == 0 {
			al.pool = rs.pool.cfg.Name
		}
	}
	a.commit(al)
	return al.assignment(), nil
}

// Release frees the service's addresses and returns them; releasing a
// service that holds nothing returns nil.
func (a *Allocator) Release(service string) []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	if al := a.uncommit(service); al != nil {
		return slices.Clone(al.ips)
	}
	return nil
}

// Assigned returns what the service holds.
func (a *Allocator) Assigned(service string) (Assignment, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if al := a.allocs[service]; al != nil {
		return al.assignment(), true
	}
	return Assignment{}, false
}

// Usage reports the current pools, by name. Addresses kept by services
// after their pool was removed are in no pool's count.
func (a *Allocator) Usage() []PoolUsage {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]PoolUsage, 0, len(a.ps.ordered))
	for _, p := range a.ps.ordered {
		u := PoolUsage{Name: p.cfg.Name}
		for i, f := range [2]Family{IPv4, IPv6} {
			if p.serves[i] {
				u.Families = append(u.Families, FamilyUsage{Family: f, Total: p.total[i], InUse: p.inUse[i]})
			}
		}
		out = append(out, u)
	}
	return out
}

// replace swaps the service's alloc for next, which uses the same addresses.
func (a *Allocator) replace(cur, next *alloc) Assignment {
	a.uncommit(cur.service)
	a.commit(next)
	return next.assignment()
}
