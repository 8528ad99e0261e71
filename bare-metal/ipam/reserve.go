package ipam

import (
	"net/netip"
	"slices"
)

// Reserve records that ip is held outside this allocator: by services
// another allocator (another herald-ccm instance) gave it to, or by
// something that is not a service at all. It replaces an earlier
// reservation of ip. Holders take part in every sharing check, so no
// service is given ip unless it can share with them, and a service of
// this allocator that holds ip but cannot share with them no longer fits:
// its next Allocate moves it. A holder named like a service of this
// allocator is that service (it is never in conflict with itself).
//
// Reserved addresses count as in use in Usage: Allocate will not hand
// them out either.
func (a *Allocator) Reserve(ip netip.Addr, holders []Request) error {
	if !ip.IsValid() || ip.Zone() != "" || ip.Is4In6() {
		return invalidRequest("<reservation>", "address %s must be a plain IPv4 or IPv6 address", ip)
	}
	if len(holders) == 0 {
		return invalidRequest("<reservation>", "a reservation of %s names no holder", ip)
	}
	allocs := make([]*alloc, 0, len(holders))
	for _, h := range holders {
		use, err := holderUse(h)
		if err != nil {
			return err
		}
		use.ips = []netip.Addr{ip}
		allocs = append(allocs, use)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.isUsed(ip) {
		if rs := a.ps.owner(ip); rs != nil {
			rs.pool.taken(ip)
		}
	}
	a.reserved[ip] = allocs
	return nil
}

// Unreserve drops the reservation of ip. It reports whether that made ip
// free: reserved before, held by no service of this allocator, and in a
// pool.
func (a *Allocator) Unreserve(ip netip.Addr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.reserved[ip]; !ok {
		return false
	}
	delete(a.reserved, ip)
	if _, used := a.used[ip]; used {
		return false
	}
	rs := a.ps.owner(ip)
	if rs == nil {
		return false
	}
	rs.pool.freed(ip)
	rs.released(ip)
	return true
}

// CanShare returns nil when the service of req may use ip next to holders,
// or an *AddressError saying why not: the same rules as inside the
// allocator (sharing key, ports, traffic policy), for holders recorded
// elsewhere, e.g. in an address claim in the cluster.
func CanShare(ip netip.Addr, req Request, holders []Request) error {
	use, err := holderUse(req)
	if err != nil {
		return err
	}
	others := make([]*alloc, 0, len(holders))
	for _, h := range holders {
		hu, err := holderUse(h)
		if err != nil {
			return err
		}
		others = append(others, hu)
	}
	if e := conflictWith(others, use); e != nil {
		e.Addr = ip
		return e
	}
	return nil
}

// holderUse is the sharing attributes of h; families and addresses do not
// matter for sharing, so only the service name is required.
func holderUse(h Request) (*alloc, error) {
	if h.Service == "" {
		return nil, invalidRequest("<unnamed>", "the request names no service")
	}
	ports := slices.Clone(h.Ports)
	for i := range ports {
		if ports[i].Protocol == "" {
			ports[i].Protocol = "TCP"
		}
	}
	return &alloc{service: h.Service, key: h.SharingKey, local: h.LocalTrafficPolicy, backend: h.BackendKey, ports: ports}, nil
}
