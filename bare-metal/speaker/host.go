package speaker

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Host answers BGP's questions about this node's own addresses.
type Host interface {
	// HasAddress reports whether addr is assigned to one of this node's
	// interfaces (a BGPPeer's sourceAddress names one node).
	HasAddress(addr netip.Addr) bool
	// AddressesToward returns this node's addresses on the interface the
	// route to dst leaves by: the next hops the node can give a peer at dst.
	AddressesToward(dst netip.Addr) ([]netip.Addr, error)
}

// HasAddress implements Host.
func (HostInterfaces) HasAddress(addr netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if p, ok := a.(*net.IPNet); ok && prefixOf(p).Addr() == addr {
			return true
		}
	}
	return false
}

// AddressesToward implements Host with the kernel's own route lookup
// (RTM_GETROUTE), so policy routing and metrics count as they will for the
// session's packets.
func (HostInterfaces) AddressesToward(dst netip.Addr) ([]netip.Addr, error) {
	routes, err := netlink.RouteGet(dst.AsSlice())
	if err != nil {
		return nil, fmt.Errorf("route to %s: %w", dst, err)
	}
	if len(routes) == 0 || routes[0].LinkIndex == 0 {
		return nil, fmt.Errorf("route to %s: %w", dst, ErrNoInterface)
	}
	link, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return nil, fmt.Errorf("interface %d toward %s: %w", routes[0].LinkIndex, dst, err)
	}
	addrs, err := netlink.AddrList(link, unix.AF_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", link.Attrs().Name, err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}
