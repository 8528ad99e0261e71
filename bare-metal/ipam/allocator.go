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
	// Pool is the pool of the addresses; for addresses no current pool
	// holds, the pool they came from.
	Pool string
	IPs  []netip.Addr
	// Outside lists the addresses of IPs no current pool hands out: their
	// pool was removed or shrunk, and the service keeps them.
	Outside []netip.Addr
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
	// outside counts, by family, the addresses in used no pool holds.
	outside [2]uint64
}

// New validates pools and returns an allocator holding nothing. Overlaps
// are not errors: the earlier pool in the list keeps the addresses, and
// Conflicts reports them.
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

// SetPools replaces the configuration; the order of pools is their
// seniority, as for New. On error nothing changes. Services keep their
// addresses even when no pool contains them any more, until they are
// released: a configuration edit must not renumber live services.
func (a *Allocator) SetPools(pools []Pool) ([]Conflict, error) {
	ps, err := buildPools(pools)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ps = ps
	a.outside = [2]uint64{}
	for ip, st := range a.used {
		st.owner = ps.owner(ip)
		if st.owner != nil {
			st.owner.pool.taken(ip)
		} else {
			a.outside[famIndex(FamilyOf(ip))]++
		}
	}
	for ip := range a.reserved {
		if _, used := a.used[ip]; used {
			continue
		}
		if rs := ps.owner(ip); rs != nil {
			rs.pool.taken(ip)
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
				return a.assignment(cur), nil
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
	return a.assignment(al), nil
}

// Restore gives the service exactly ips, to rebuild state from Service
// status at start. Scope and autoAssign are not checked: the addresses are
// already in use on the network. Nor must a pool hold them: a pool removed
// or shrunk while herald-ccm was down must not renumber a Service
// (Assignment.Outside lists such addresses). The assignment's pool is the
// one holding the first address, else req.Pool, the pool the Service
// recorded; req.Families and req.IPs are ignored.
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
	al := r.newAlloc(req.Pool, r.IPs)
	owned := false
	for _, ip := range al.ips {
		if err := a.shareCheck(ip, al); err != nil {
			if cur != nil {
				a.commit(cur)
			}
			return Assignment{}, err
		}
		if rs := a.ps.owner(ip); rs != nil && !owned {
			al.pool, owned = rs.pool.cfg.Name, true
		}
	}
	a.commit(al)
	return a.assignment(al), nil
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
		return a.assignment(al), true
	}
	return Assignment{}, false
}

// Usage reports the current pools, by name. Addresses kept by services
// after their pool was removed or shrunk are in no pool's count: Outside
// counts them.
func (a *Allocator) Usage() []PoolUsage {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]PoolUsage, 0, len(a.ps.ordered))
	for _, p := range a.ps.ordered {
		u := PoolUsage{Name: p.cfg.Name}
		for i, f := range [2]Family{IPv4, IPv6} {
			if !p.serves[i] {
				continue
			}
			total := p.total[i]
			if f == IPv6 {
				total = satAdd(total, p.anycastInUse)
			}
			u.Families = append(u.Families, FamilyUsage{Family: f, Total: total, InUse: p.inUse[i]})
		}
		out = append(out, u)
	}
	return out
}

// Outside counts, by family, the addresses services hold that no current
// pool hands out: their pool was removed or shrunk (Assignment.Outside).
func (a *Allocator) Outside() map[Family]uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return map[Family]uint64{IPv4: a.outside[0], IPv6: a.outside[1]}
}

// replace swaps the service's alloc for next, which uses the same addresses.
func (a *Allocator) replace(cur, next *alloc) Assignment {
	a.uncommit(cur.service)
	a.commit(next)
	return a.assignment(next)
}
