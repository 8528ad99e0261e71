package ipam

import (
	"fmt"
	"net/netip"
	"slices"
)

// request is a validated Request.
type request struct {
	Request
	fams []Family
	want [2]netip.Addr // specific address per family index, zero if none
	use  *alloc        // the request's sharing attributes, without addresses
}

func invalidRequest(service, format string, args ...any) error {
	return &PoolError{Err: ErrInvalidRequest, Service: service, Reason: fmt.Sprintf(format, args...)}
}

func normalize(req Request) (*request, error) {
	r := &request{Request: req}
	if req.Service == "" {
		return nil, invalidRequest("<unnamed>", "the request names no service")
	}
	for _, ip := range req.IPs {
		switch {
		case !ip.IsValid():
			return nil, invalidRequest(req.Service, "an unset IP address was requested")
		case ip.Zone() != "" || ip.Is4In6():
			return nil, invalidRequest(req.Service, "address %s must be a plain IPv4 or IPv6 address", ip)
		}
		i := famIndex(FamilyOf(ip))
		if r.want[i].IsValid() {
			return nil, invalidRequest(req.Service, "more than one %s address requested (%s, %s)", FamilyOf(ip), r.want[i], ip)
		}
		r.want[i] = ip
	}
	r.fams = slices.Clone(req.Families)
	if len(r.fams) == 0 {
		for _, ip := range req.IPs {
			r.fams = append(r.fams, FamilyOf(ip))
		}
	}
	if len(r.fams) == 0 {
		return nil, invalidRequest(req.Service, "no IP family requested")
	}
	for i, f := range r.fams {
		if f != IPv4 && f != IPv6 {
			return nil, invalidRequest(req.Service, "unknown IP family %q", f)
		}
		if slices.Contains(r.fams[:i], f) {
			return nil, invalidRequest(req.Service, "IP family %s requested twice", f)
		}
	}
	for _, ip := range req.IPs {
		if !slices.Contains(r.fams, FamilyOf(ip)) {
			return nil, invalidRequest(req.Service, "address %s is not of a requested family %v", ip, r.fams)
		}
	}
	ports := make([]Port, len(req.Ports))
	for i, p := range req.Ports {
		if p.Protocol == "" {
			p.Protocol = "TCP"
		}
		ports[i] = p
	}
	r.use = &alloc{service: req.Service, key: req.SharingKey, local: req.LocalTrafficPolicy, backend: req.BackendKey, ports: ports}
	return r, nil
}

// fallback is the PreferDualStack request for a single family: the first
// one, or the family of the one specific address asked for, since dropping
// an address the user named would be worse than dropping a family. With
// RequireDualStack, one family, or two specific addresses there is none.
func (r *request) fallback() (*request, bool) {
	if r.RequireAllFamilies || len(r.fams) < 2 || (r.want[0].IsValid() && r.want[1].IsValid()) {
		return nil, false
	}
	f := r.fams[0]
	for _, w := range r.want {
		if w.IsValid() {
			f = FamilyOf(w)
		}
	}
	c := *r
	c.fams = []Family{f}
	return &c, true
}

// newAlloc returns a fresh alloc; the ports slice is shared, never mutated.
func (r *request) newAlloc(pool string, ips []netip.Addr) *alloc {
	al := *r.use
	al.pool, al.ips = pool, slices.Clone(ips)
	return &al
}

type fitness int

const (
	fitNone     fitness = iota
	fitExact            // keep the addresses
	fitFallback         // PreferDualStack got the first family only; keep unless it can grow
)

// fit decides whether cur still satisfies r. Pool scope and autoAssign are
// deliberately not rechecked: editing a pool must not renumber services.
func (a *Allocator) fit(cur *alloc, r *request) fitness {
	if r.Pool != "" && cur.pool != r.Pool {
		return fitNone
	}
	for _, w := range r.want {
		if w.IsValid() && !slices.Contains(cur.ips, w) {
			return fitNone
		}
	}
	for _, ip := range cur.ips {
		if a.shareCheck(ip, r.use) != nil {
			return fitNone
		}
	}
	if len(cur.ips) == len(r.fams) {
		for i, f := range r.fams {
			if FamilyOf(cur.ips[i]) != f {
				return fitNone
			}
		}
		return fitExact
	}
	if fb, ok := r.fallback(); ok && len(cur.ips) == 1 && FamilyOf(cur.ips[0]) == fb.fams[0] {
		return fitFallback
	}
	return fitNone
}

// tryUpgrade adds the missing families to a PreferDualStack service from
// its own pool, keeping its first address; if that is impossible it keeps
// what it has, which is still a valid answer to the request.
func (a *Allocator) tryUpgrade(cur *alloc, r *request) Assignment {
	p := a.ps.byName[cur.pool]
	if p == nil || !p.servesAll(r.fams) || p.scopeReason(r) != "" {
		return a.replace(cur, r.newAlloc(cur.pool, cur.ips))
	}
	a.uncommit(cur.service)
	if next, ok := a.pickAll(p, r, cur, true); ok {
		a.commit(next)
		return a.assignment(next)
	}
	a.commit(cur)
	return a.replace(cur, r.newAlloc(cur.pool, cur.ips))
}
