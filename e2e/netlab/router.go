package netlab

import (
	"net/netip"
	"strconv"
)

// Router is a LAN host that forwards between the LAN and subnets of its
// own, with clients behind it: the BGP tier's topology, where the client
// reaches a VIP only through the routes the nodes advertise to the router.
type Router struct {
	Host
	lab *Lab
}

// AddRouter puts a forwarding host on the LAN at ip/24 and ip6/64.
func (l *Lab) AddRouter(short string, ip, ip6 netip.Addr) *Router {
	l.t.Helper()
	h, err := l.addLANHost(short, ip)
	if err != nil {
		l.t.Fatal(err)
	}
	l.AddIPv6(h, ip6, false)
	if _, err := run("ip", "netns", "exec", h.Name, "sysctl", "-qw", "net.ipv4.ip_forward=1",
		"net.ipv6.conf.all.forwarding=1"); err != nil {
		l.t.Fatal(err)
	}
	return &Router{Host: *h, lab: l}
}

// SetL4MultipathHash makes the router spread connections over the next
// hops of an ECMP route by their ports too (Linux hashes by addresses
// alone by default, so one client would always reach one node).
func (r *Router) SetL4MultipathHash() {
	r.lab.t.Helper()
	if _, err := run("ip", "netns", "exec", r.Name, "sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1",
		"net.ipv6.fib_multipath_hash_policy=1"); err != nil {
		r.lab.t.Fatal(err)
	}
}

// AddClient puts a host on a subnet of the router's own: the router takes
// the first address of subnet and subnet6, the client ip and ip6, and
// the client's default routes point at the router. Only documentation
// ranges are allowed.
func (r *Router) AddClient(short string, ip netip.Addr, subnet netip.Prefix, ip6 netip.Addr, subnet6 netip.Prefix) *Host {
	l := r.lab
	l.t.Helper()
	for _, p := range []netip.Prefix{subnet, subnet6} {
		if !documentation(p) {
			l.t.Fatalf("netlab: client subnet %s is not in a documentation range", p)
		}
	}
	if !subnet.Contains(ip) || !subnet6.Contains(ip6) {
		l.t.Fatalf("netlab: client %s/%s outside %s/%s", ip, ip6, subnet, subnet6)
	}
	ns, err := l.addNamespace(short)
	if err != nil {
		l.t.Fatal(err)
	}
	gw, gw6 := subnet.Masked().Addr().Next(), subnet6.Masked().Addr().Next()
	port := "c-" + short // the router's end
	bits, bits6 := strconv.Itoa(subnet.Bits()), strconv.Itoa(subnet6.Bits())
	for _, s := range [][]string{
		{"-n", r.Name, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.Name},
		{"-n", r.Name, "addr", "add", gw.String() + "/" + bits, "dev", port},
		{"-n", r.Name, "addr", "add", gw6.String() + "/" + bits6, "dev", port, "nodad"},
		{"-n", r.Name, "link", "set", port, "up"},
		{"-n", ns.Name, "addr", "add", ip.String() + "/" + bits, "dev", "eth0"},
		{"-n", ns.Name, "addr", "add", ip6.String() + "/" + bits6, "dev", "eth0", "nodad"},
		{"-n", ns.Name, "link", "set", "eth0", "up"},
		{"-n", ns.Name, "route", "add", "default", "via", gw.String()},
		{"-n", ns.Name, "-6", "route", "add", "default", "via", gw6.String()},
	} {
		if _, err := run("ip", s...); err != nil {
			l.t.Fatal(err)
		}
	}
	return &Host{Netns: ns, Short: short, IP: ip, IP6: ip6}
}

var documentationRanges = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/32"),
}

func documentation(p netip.Prefix) bool {
	for _, r := range documentationRanges {
		if r.Bits() <= p.Bits() && r.Contains(p.Addr()) {
			return true
		}
	}
	return false
}
