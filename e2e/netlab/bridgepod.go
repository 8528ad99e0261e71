package netlab

import "net/netip"

// AddBridgedPod creates a pod namespace behind the node, attached to the
// node's bridge named bridge (created with the first such pod), as a
// bridge CNI (kubenet's cbr0, the bridge plugin's cni0) attaches pods.
// Routed packets from it enter the node through the bridge, not through
// the pod's veth (v-<short>, the bridge's port); the node answers ARP on
// the bridge for everything, so the pod needs no gateway address, as
// AddPod's need none. IPv4 only.
func (n *Node) AddBridgedPod(bridge, short string, ip netip.Addr) *Host {
	l := n.lab
	l.t.Helper()
	if !netip.MustParsePrefix("198.51.100.0/24").Contains(ip) {
		l.t.Fatalf("netlab: pod address %s is outside 198.51.100.0/24", ip)
	}
	if _, err := run("ip", "-n", n.Name, "link", "show", bridge); err != nil {
		for _, s := range [][]string{
			{"ip", "-n", n.Name, "link", "add", bridge, "type", "bridge"},
			{"ip", "netns", "exec", n.Name, "sysctl", "-qw", "net.ipv4.conf." + bridge + ".proxy_arp=1",
				"net.ipv4.neigh." + bridge + ".proxy_delay=0"},
			{"ip", "-n", n.Name, "link", "set", bridge, "up"},
		} {
			if _, err := run(s[0], s[1:]...); err != nil {
				l.t.Fatal(err)
			}
		}
	}
	ns, err := l.addNamespace(short)
	if err != nil {
		l.t.Fatal(err)
	}
	port := "v-" + short
	for _, s := range [][]string{
		{"-n", n.Name, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.Name},
		{"-n", n.Name, "link", "set", port, "master", bridge, "up"},
		{"-n", n.Name, "route", "add", ip.String() + "/32", "dev", bridge},
		{"-n", ns.Name, "addr", "add", ip.String() + "/32", "dev", "eth0"},
		{"-n", ns.Name, "link", "set", "eth0", "up"},
		{"-n", ns.Name, "route", "add", "default", "dev", "eth0"},
	} {
		if _, err := run("ip", s...); err != nil {
			l.t.Fatal(err)
		}
	}
	return &Host{Netns: ns, Short: short, IP: ip}
}
