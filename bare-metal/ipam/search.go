package ipam

import (
	"fmt"
	"net/netip"
	"strings"
)

// find chooses addresses for r without committing them. prev is what the
// service held before (already uncommitted); its addresses are preferred so
// that a changed request moves as little as possible.
func (a *Allocator) find(r *request, prev *alloc) (*alloc, error) {
	if r.want[0].IsValid() || r.want[1].IsValid() {
		return a.findSpecific(r, prev)
	}
	if r.Pool != "" {
		p, err := a.namedPool(r)
		if err != nil {
			return nil, err
		}
		return a.findInPools(r, []*poolState{p}, prev, true)
	}
	var pools []*poolState
	for _, p := range a.ps.preferred {
		if p.cfg.AutoAssign && p.scopeReason(r) == "" {
			pools = append(pools, p)
		}
	}
	if prev != nil {
		// Staying in the current pool keeps the current addresses.
		for i, p := range pools {
			if p.cfg.Name == prev.pool {
				copy(pools[1:i+1], pools[:i])
				pools[0] = p
				break
			}
		}
	}
	return a.findInPools(r, pools, prev, false)
}

func (a *Allocator) namedPool(r *request) (*poolState, error) {
	p := a.ps.byName[r.Pool]
	if p == nil {
		return nil, &PoolError{Err: ErrUnknownPool, Service: r.Service, Pool: r.Pool, Reason: "no pool of that name is configured"}
	}
	if reason := p.scopeReason(r); reason != "" {
		return nil, &PoolError{Err: ErrPoolNotEligible, Service: r.Service, Pool: r.Pool, Reason: reason}
	}
	return p, nil
}

func (a *Allocator) findInPools(r *request, pools []*poolState, prev *alloc, named bool) (*alloc, error) {
	var serving []*poolState
	for _, p := range pools {
		if p.servesAll(r.fams) {
			serving = append(serving, p)
		}
	}
	if len(serving) == 0 {
		return nil, a.familyError(r, pools, named)
	}
	// With a sharing key, an address the key's services already use wins
	// over pool order; otherwise services meant to share would not.
	if r.SharingKey != "" {
		for _, p := range serving {
			if al, ok := a.pickAll(p, r, prev, false); ok {
				return al, nil
			}
		}
	}
	for _, p := range serving {
		if al, ok := a.pickAll(p, r, prev, true); ok {
			return al, nil
		}
	}
	names := make([]string, len(serving))
	for i, p := range serving {
		names[i] = p.cfg.Name
	}
	e := &PoolError{Err: ErrPoolExhausted, Service: r.Service,
		Reason: fmt.Sprintf("no free %s address in pools %s", famList(r.fams), strings.Join(names, ", "))}
	if len(serving) == 1 {
		e.Pool, e.Reason = names[0], fmt.Sprintf("no free %s address", famList(r.fams))
	}
	return nil, e
}

// pickAll chooses one address per requested family from p: the requested
// one, else the previous one, else one shared under the sharing key, else
// (if fresh) the lowest free one.
func (a *Allocator) pickAll(p *poolState, r *request, prev *alloc, fresh bool) (*alloc, bool) {
	var buf [2]netip.Addr
	for i, f := range r.fams {
		ip, ok := a.pickOne(p, f, r, prev, fresh)
		if !ok {
			return nil, false
		}
		buf[i] = ip
	}
	return r.newAlloc(p.cfg.Name, buf[:len(r.fams)]), true
}

func (a *Allocator) pickOne(p *poolState, f Family, r *request, prev *alloc, fresh bool) (netip.Addr, bool) {
	if w := r.want[famIndex(f)]; w.IsValid() {
		return w, true
	}
	if prev != nil {
		if ip, ok := prev.ip(f); ok && a.ownedBy(ip, p) && a.shareCheck(ip, r.use) == nil {
			return ip, true
		}
	}
	if r.SharingKey != "" {
		if ip, ok := a.sharedCandidate(p, f, r.use); ok {
			return ip, true
		}
	}
	if !fresh {
		return netip.Addr{}, false
	}
	for _, rs := range p.ranges {
		if rs.r.Family() != f {
			continue
		}
		if ip, ok := rs.peek(a.isUsed); ok {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

func (a *Allocator) ownedBy(ip netip.Addr, p *poolState) bool {
	if st := a.used[ip]; st != nil {
		return st.owner != nil && st.owner.pool == p
	}
	rs := a.ps.owner(ip)
	return rs != nil && rs.pool == p
}

func (a *Allocator) findSpecific(r *request, prev *alloc) (*alloc, error) {
	var pool *poolState
	var first netip.Addr
	for _, f := range r.fams {
		w := r.want[famIndex(f)]
		if !w.IsValid() {
			continue
		}
		rs := a.ps.owner(w)
		if rs == nil {
			name, reason := a.ps.notOwnedReason(w)
			return nil, &AddressError{Err: ErrNotInAnyPool, Service: r.Service, Addr: w, Pool: name, Reason: reason}
		}
		if pool != nil && rs.pool != pool {
			return nil, invalidRequest(r.Service, "%s (pool %s) and %s (pool %s) are in different pools; all addresses of a service come from one pool",
				first, pool.cfg.Name, w, rs.pool.cfg.Name)
		}
		pool, first = rs.pool, w
	}
	if r.Pool != "" && r.Pool != pool.cfg.Name {
		return nil, invalidRequest(r.Service, "address %s belongs to pool %s, but the service asks for pool %s", first, pool.cfg.Name, r.Pool)
	}
	if reason := pool.scopeReason(r); reason != "" {
		return nil, &PoolError{Err: ErrPoolNotEligible, Service: r.Service, Pool: pool.cfg.Name, Reason: reason}
	}
	if !pool.servesAll(r.fams) {
		return nil, a.familyError(r, []*poolState{pool}, true)
	}
	for _, w := range r.want {
		if w.IsValid() {
			if err := a.shareCheck(w, r.use); err != nil {
				return nil, err
			}
		}
	}
	if al, ok := a.pickAll(pool, r, prev, true); ok {
		return al, nil
	}
	return nil, &PoolError{Err: ErrPoolExhausted, Service: r.Service, Pool: pool.cfg.Name,
		Reason: fmt.Sprintf("no free address for the families other than the requested %s", first)}
}

// familyError explains why no pool in pools serves all requested families.
// named: pools is the one pool the request pins (by name or address).
func (a *Allocator) familyError(r *request, pools []*poolState, named bool) error {
	e := &PoolError{Err: ErrFamilyUnavailable, Service: r.Service}
	if named {
		e.Pool = pools[0].cfg.Name
		for _, f := range r.fams {
			if !pools[0].serves[famIndex(f)] {
				e.Reason = fmt.Sprintf("the pool has no %s addresses", f)
				break
			}
		}
		return e
	}
	e.Reason = fmt.Sprintf("no eligible pool has both %s addresses; a service's addresses come from one pool", famList(r.fams))
	for _, f := range r.fams {
		served := false
		for _, p := range pools {
			served = served || p.serves[famIndex(f)]
		}
		if !served {
			e.Reason = fmt.Sprintf("no eligible pool has %s addresses", f)
			break
		}
	}
	var names []string
	for _, p := range pools {
		names = append(names, p.cfg.Name)
	}
	if len(names) > 0 {
		e.Reason += " (eligible: " + strings.Join(names, ", ") + ")"
	}
	if why := a.whyNotEligible(r); why != "" {
		e.Reason += "; not eligible: " + why
	}
	return e
}

func (a *Allocator) whyNotEligible(r *request) string {
	if len(a.ps.ordered) == 0 {
		return "no pools are configured"
	}
	var parts []string
	for _, p := range a.ps.ordered {
		switch reason := p.scopeReason(r); {
		case !p.cfg.AutoAssign:
			parts = append(parts, p.cfg.Name+" (autoAssign is off; name it to use it)")
		case reason != "":
			parts = append(parts, p.cfg.Name+" ("+reason+")")
		}
	}
	return strings.Join(parts, ", ")
}

func famList(fams []Family) string {
	s := make([]string, len(fams))
	for i, f := range fams {
		s[i] = string(f)
	}
	return strings.Join(s, " and ")
}
