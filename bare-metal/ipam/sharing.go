package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Port is one service port; an address is shared only by services whose
// (protocol, port) pairs do not collide.
type Port struct {
	Protocol string // "TCP", "UDP", "SCTP"; "" means TCP as in the Service API
	Port     int32
}

func (p Port) String() string { return fmt.Sprintf("%s/%d", p.Protocol, p.Port) }

// alloc is what one service holds. Holders of an address share the same
// *alloc values as the allocs map, so updating one updates both.
type alloc struct {
	service string
	pool    string
	ips     []netip.Addr
	key     string // sharing key
	local   bool   // externalTrafficPolicy: Local
	backend string
	ports   []Port
}

// assignment is what al holds, as callers see it.
func (a *Allocator) assignment(al *alloc) Assignment {
	as := Assignment{Pool: al.pool, IPs: slices.Clone(al.ips)}
	for _, ip := range al.ips {
		if st := a.used[ip]; st != nil && st.owner == nil {
			as.Outside = append(as.Outside, ip)
		}
	}
	return as
}

func (al *alloc) ip(f Family) (netip.Addr, bool) {
	for _, a := range al.ips {
		if FamilyOf(a) == f {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// ipState is one address in use.
type ipState struct {
	owner   *rangeState // nil when no current pool hands the address out
	holders []*alloc    // sorted by service, for stable messages
}

func (a *Allocator) isUsed(ip netip.Addr) bool {
	if _, ok := a.used[ip]; ok {
		return true
	}
	_, ok := a.reserved[ip]
	return ok
}

// commit records al without any check; callers check first.
func (a *Allocator) commit(al *alloc) {
	for _, ip := range al.ips {
		st := a.used[ip]
		if st == nil {
			st = &ipState{owner: a.ps.owner(ip)}
			a.used[ip] = st
			if st.owner == nil {
				a.outside[famIndex(FamilyOf(ip))]++
			} else if _, reserved := a.reserved[ip]; !reserved {
				st.owner.pool.taken(ip) // a reserved address counts already
			}
			if al.key != "" {
				a.keyIndex(al.key)[ip] = struct{}{}
			}
		}
		i, _ := slices.BinarySearchFunc(st.holders, al.service, func(h *alloc, s string) int { return strings.Compare(h.service, s) })
		st.holders = slices.Insert(st.holders, i, al)
	}
	a.allocs[al.service] = al
}

// uncommit removes the service's alloc and returns it (nil if none).
func (a *Allocator) uncommit(service string) *alloc {
	al := a.allocs[service]
	if al == nil {
		return nil
	}
	delete(a.allocs, service)
	for _, ip := range al.ips {
		st := a.used[ip]
		st.holders = slices.DeleteFunc(st.holders, func(h *alloc) bool { return h == al })
		if len(st.holders) > 0 {
			continue
		}
		delete(a.used, ip)
		if al.key != "" {
			delete(a.byKey[al.key], ip)
			if len(a.byKey[al.key]) == 0 {
				delete(a.byKey, al.key)
			}
		}
		if st.owner == nil {
			a.outside[famIndex(FamilyOf(ip))]--
		} else if _, reserved := a.reserved[ip]; !reserved {
			st.owner.pool.freed(ip)
			st.owner.released(ip)
		}
	}
	return al
}

func (a *Allocator) keyIndex(key string) map[netip.Addr]struct{} {
	m := a.byKey[key]
	if m == nil {
		m = map[netip.Addr]struct{}{}
		a.byKey[key] = m
	}
	return m
}

// shareCheck returns nil when al may use ip next to its current holders,
// local ones and those of a reservation.
func (a *Allocator) shareCheck(ip netip.Addr, al *alloc) error {
	st := a.used[ip]
	reserved := a.reserved[ip]
	var holders []*alloc
	switch {
	case st == nil && len(reserved) == 0:
		return nil
	case st == nil:
		holders = reserved
	case len(reserved) == 0:
		holders = st.holders
	default:
		holders = append(slices.Clone(st.holders), reserved...)
	}
	err := conflictWith(holders, al)
	if err == nil {
		return nil
	}
	if st != nil && st.owner != nil {
		err.Pool = st.owner.pool.cfg.Name
	} else if rs := a.ps.owner(ip); rs != nil {
		err.Pool = rs.pool.cfg.Name
	}
	err.Addr = ip
	return err
}

// conflictWith returns why al may not join holders (nil when it may),
// without Addr and Pool. A holder with al's service name is al itself.
func conflictWith(holders []*alloc, al *alloc) *AddressError {
	var others []string
	reason := ""
	sentinel := ErrAddressInUse
	for _, h := range holders {
		if h.service == al.service || slices.Contains(others, h.service) {
			continue
		}
		others = append(others, h.service)
		if reason != "" {
			continue
		}
		switch {
		case h.key == "":
			reason = "the holder does not allow sharing (no sharing key)"
		case al.key == "":
			reason = "the service has no sharing key"
		case h.key != al.key:
			sentinel, reason = ErrSharingConflict, fmt.Sprintf("sharing key %q differs from the holder's %q", al.key, h.key)
		case (h.local || al.local) && h.backend != al.backend:
			sentinel, reason = ErrSharingConflict, "with externalTrafficPolicy Local, services sharing an address must select the same backends"
		}
	}
	if reason == "" {
		sentinel, reason = ErrSharingConflict, portClash(holders, al)
	}
	if reason == "" {
		return nil
	}
	return &AddressError{Err: sentinel, Service: al.service, Holders: others, Reason: reason}
}

// portClash names the first port al wants that another holder uses, or "".
// Holders and their ports are few, so scanning beats keeping an index.
func portClash(holders []*alloc, al *alloc) string {
	for _, p := range al.ports {
		for _, h := range holders {
			if h.service != al.service && slices.Contains(h.ports, p) {
				return fmt.Sprintf("port %s is already used by %s", p, h.service)
			}
		}
	}
	return ""
}

// sameUse reports whether a and b differ at most in their addresses.
func sameUse(a, b *alloc) bool {
	return a.key == b.key && a.local == b.local && a.backend == b.backend && slices.Equal(a.ports, b.ports)
}

// sharedCandidate returns the lowest address of family f in pool p that
// services with al's sharing key already use and al can join. Its cost is
// the number of addresses under that key, which stays small in practice.
func (a *Allocator) sharedCandidate(p *poolState, f Family, al *alloc) (netip.Addr, bool) {
	var best netip.Addr
	for ip := range a.byKey[al.key] {
		if FamilyOf(ip) != f || (best.IsValid() && best.Less(ip)) {
			continue
		}
		st := a.used[ip]
		if st.owner == nil || st.owner.pool != p || a.shareCheck(ip, al) != nil {
			continue
		}
		best = ip
	}
	return best, best.IsValid()
}
