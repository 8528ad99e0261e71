// Package netlab builds a small network out of Linux network namespaces for
// the root tier of the end-to-end tests: a LAN (a bridge in a namespace of
// its own) with nodes and clients on it, and pods, each a namespace behind
// its node. Only documentation addresses are used (192.0.2.0/24 for the LAN,
// 198.51.100.0/24 for pods and VIPs), so nothing in the lab can be confused
// with a real network.
//
// Every namespace name starts with a per-run prefix, "hl-<pid>-", so test
// packages running in parallel never collide, and a later run can remove
// what a killed one left behind (its PID is gone). Interfaces are created
// directly inside their namespaces (never in the host's), so their short
// names (eth0, a port per host on the bridge) cannot collide either.
//
// Pods get a /32 and a default route straight out of their veth; the node's
// end answers ARP for everything (proxy_arp) and has a /32 route to the pod,
// as Calico does. That needs no gateway address and no bridge per node.
package netlab

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"

	"github.com/heraldlb/herald/internal/testenv"
)

// lanPrefix is the LAN's prefix length: every node and client is in
// 192.0.2.0/24.
const lanPrefix = 24

// T is what the lab needs of its caller: a test (testing.TB), or `make
// demo`, which builds the same lab outside a test.
type T interface {
	Helper()
	Cleanup(func())
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
	Failed() bool
}

// Lab is one test's network. Create it with New; t.Cleanup removes it.
type Lab struct {
	t      T
	prefix string
	bridge *Netns

	mu         sync.Mutex
	namespaces []*Netns // in creation order
	cleanups   []func() // run before the namespaces go, last first
}

// Host is a namespace with one address: a node, a client or a pod.
type Host struct {
	*Netns
	// Short is the name given to AddNode/AddClient/AddPod.
	Short string
	IP    netip.Addr
	// IP6 is set by AddIPv6 or AddPodIPv6; the lab is IPv4-only otherwise.
	IP6 netip.Addr
}

// Node is a host that forwards: pods sit behind it.
type Node struct {
	Host
	lab *Lab
}

// New creates an empty lab (the bridge namespace) and registers its removal
// with t. A test is skipped as SkipUnlessAble does; any other caller checks
// for root itself.
func New(t T) *Lab {
	t.Helper()
	if tb, ok := t.(testing.TB); ok {
		SkipUnlessAble(tb)
	}
	removeStale(t)
	l := &Lab{t: t, prefix: "hl-" + strconv.Itoa(os.Getpid()) + "-"}
	t.Cleanup(l.destroy)
	var err error
	if l.bridge, err = l.addNamespace("lan"); err != nil {
		t.Fatal(err)
	}
	if _, err := run("ip", "-n", l.bridge.Name, "link", "add", "br0", "type", "bridge"); err != nil {
		t.Fatal(err)
	}
	if _, err := run("ip", "-n", l.bridge.Name, "link", "set", "br0", "up"); err != nil {
		t.Fatal(err)
	}
	return l
}

// Bridge is the namespace holding the LAN bridge, br0, whose port for a
// host named short is p-<short>.
func (l *Lab) Bridge() *Netns { return l.bridge }

// SkipUnlessAble ends t through testenv.Unavailable when not run as root or
// when ip, nft or sysctl is missing (namespaces, veths and nftables need
// CAP_NET_ADMIN): a skip by hand, a failure in CI, where the network tier
// must run.
func SkipUnlessAble(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t, "netlab: the network tier's namespaces")
	testenv.RequireTools(t, "netlab: the network tier's namespaces", "ip", "nft", "sysctl")
}

// Failed reports whether the test (or demo) that made the lab has failed;
// Logf logs through it. Cleanups registered with OnCleanup use these: a
// subtest that added a process may be over by the time the lab goes.
func (l *Lab) Failed() bool { return l.t.Failed() }

// Logf logs through the lab's maker.
func (l *Lab) Logf(format string, args ...any) { l.t.Logf(format, args...) }

// OnCleanup runs fn when the lab is torn down, before its namespaces are
// deleted: processes running inside them must stop first.
func (l *Lab) OnCleanup(fn func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cleanups = append(l.cleanups, fn)
}

func (l *Lab) destroy() {
	l.mu.Lock()
	cleanups, namespaces := l.cleanups, l.namespaces
	l.cleanups, l.namespaces = nil, nil
	l.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	for i := len(namespaces) - 1; i >= 0; i-- {
		// Deleting a namespace deletes the interfaces inside it and their
		// veth peers elsewhere.
		if _, err := run("ip", "netns", "del", namespaces[i].Name); err != nil {
			l.t.Errorf("netlab cleanup: %v", err)
		}
	}
}

// removeStale deletes namespaces left by earlier runs whose process is gone
// (a test binary killed before its cleanup ran).
func removeStale(t T) {
	removed, err := testenv.RemoveStaleNetns("hl-")
	if err != nil {
		t.Logf("netlab: listing namespaces: %v", err)
	}
	for _, name := range removed {
		t.Logf("netlab: removed stale namespace %s", name)
	}
}

func (l *Lab) addNamespace(short string) (*Netns, error) {
	ns := &Netns{Name: l.prefix + short}
	if _, err := run("ip", "netns", "add", ns.Name); err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.namespaces = append(l.namespaces, ns)
	l.mu.Unlock()
	if _, err := run("ip", "-n", ns.Name, "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	return ns, nil
}

// addLANHost creates a namespace with eth0 on the bridge at ip/24.
func (l *Lab) addLANHost(short string, ip netip.Addr) (*Host, error) {
	if !netip.MustParsePrefix("192.0.2.0/24").Contains(ip) {
		return nil, fmt.Errorf("netlab: LAN address %s is outside 192.0.2.0/24", ip)
	}
	ns, err := l.addNamespace(short)
	if err != nil {
		return nil, err
	}
	port := "p-" + short // the host's port on the bridge
	steps := [][]string{
		{"-n", l.bridge.Name, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.Name},
		{"-n", l.bridge.Name, "link", "set", port, "master", "br0", "up"},
		{"-n", ns.Name, "addr", "add", ip.String() + "/" + strconv.Itoa(lanPrefix), "dev", "eth0"},
		{"-n", ns.Name, "link", "set", "eth0", "up"},
	}
	for _, s := range steps {
		if _, err := run("ip", s...); err != nil {
			return nil, err
		}
	}
	return &Host{Netns: ns, Short: short, IP: ip}, nil
}

// AddClient puts a plain host on the LAN.
func (l *Lab) AddClient(short string, ip netip.Addr) *Host {
	l.t.Helper()
	h, err := l.addLANHost(short, ip)
	if err != nil {
		l.t.Fatal(err)
	}
	return h
}

// AddNode puts a forwarding host on the LAN. Its default route points out
// of eth0 with no gateway: traffic to ClusterIPs must find a route before the
// nat output hook rewrites it, and anything left undiverted simply fails.
func (l *Lab) AddNode(short string, ip netip.Addr) *Node {
	l.t.Helper()
	h, err := l.addLANHost(short, ip)
	if err != nil {
		l.t.Fatal(err)
	}
	for _, cmd := range [][]string{
		{"ip", "-n", h.Name, "route", "add", "default", "dev", "eth0"},
		{"ip", "netns", "exec", h.Name, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
	} {
		if _, err := run(cmd[0], cmd[1:]...); err != nil {
			l.t.Fatal(err)
		}
	}
	return &Node{Host: *h, lab: l}
}

// AddPod creates a pod namespace behind the node with address ip/32.
func (n *Node) AddPod(short string, ip netip.Addr) *Host {
	l := n.lab
	l.t.Helper()
	if !netip.MustParsePrefix("198.51.100.0/24").Contains(ip) {
		l.t.Fatalf("netlab: pod address %s is outside 198.51.100.0/24", ip)
	}
	ns, err := l.addNamespace(short)
	if err != nil {
		l.t.Fatal(err)
	}
	veth := "v-" + short // the node's end
	steps := [][]string{
		{"ip", "-n", n.Name, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns.Name},
		// proxy_delay: the kernel delays proxy ARP answers by up to 0.8 s
		// by default, which would add to a pod's first connection.
		{"ip", "netns", "exec", n.Name, "sysctl", "-qw", "net.ipv4.conf." + veth + ".proxy_arp=1",
			"net.ipv4.neigh." + veth + ".proxy_delay=0"},
		{"ip", "-n", n.Name, "link", "set", veth, "up"},
		{"ip", "-n", n.Name, "route", "add", ip.String() + "/32", "dev", veth},
		{"ip", "-n", ns.Name, "addr", "add", ip.String() + "/32", "dev", "eth0"},
		{"ip", "-n", ns.Name, "link", "set", "eth0", "up"},
		{"ip", "-n", ns.Name, "route", "add", "default", "dev", "eth0"},
	}
	for _, s := range steps {
		if _, err := run(s[0], s[1:]...); err != nil {
			l.t.Fatal(err)
		}
	}
	return &Host{Netns: ns, Short: short, IP: ip}
}

// Route adds a route on h: dst via gw (a LAN address).
func (l *Lab) Route(h *Host, dst netip.Prefix, gw netip.Addr) {
	l.t.Helper()
	if _, err := run("ip", "-n", h.Name, "route", "add", dst.String(), "via", gw.String()); err != nil {
		l.t.Fatal(err)
	}
}

// podGateway6 is the pods' IPv6 next hop: every node puts it on each pod
// veth, as Calico does with 169.254.1.1, so a pod needs no per-node
// configuration. (IPv4 uses proxy ARP instead, which IPv6 has no
// address-free equivalent of.) DAD is off for every lab address, so none is
// tentative when a test starts.
var podGateway6 = netip.MustParseAddr("2001:db8:ffff:ffff::1")

// PodGateway6 is the address a node has toward each of its pods in IPv6:
// the source a pod sees when its own node masquerades traffic to it.
func PodGateway6() netip.Addr { return podGateway6 }

// AddIPv6 gives a LAN host (client or node) ip/64 on the LAN. On a node it
// also turns on IPv6 forwarding and a default route out of eth0, as AddNode
// does for IPv4.
func (l *Lab) AddIPv6(h *Host, ip netip.Addr, node bool) {
	l.t.Helper()
	if !netip.MustParsePrefix("2001:db8::/32").Contains(ip) {
		l.t.Fatalf("netlab: IPv6 address %s is outside 2001:db8::/32", ip)
	}
	cmds := [][]string{{"ip", "-n", h.Name, "addr", "add", ip.String() + "/64", "dev", "eth0", "nodad"}}
	if node {
		cmds = append(cmds,
			[]string{"ip", "netns", "exec", h.Name, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
			[]string{"ip", "-n", h.Name, "-6", "route", "add", "default", "dev", "eth0"})
	}
	for _, c := range cmds {
		if _, err := run(c[0], c[1:]...); err != nil {
			l.t.Fatal(err)
		}
	}
	h.IP6 = ip
}

// AddPodIPv6 gives a pod of n the address ip/128, routed like its IPv4 one.
func (n *Node) AddPodIPv6(pod *Host, ip netip.Addr) {
	l := n.lab
	l.t.Helper()
	if !netip.MustParsePrefix("2001:db8::/32").Contains(ip) {
		l.t.Fatalf("netlab: IPv6 address %s is outside 2001:db8::/32", ip)
	}
	veth, gw := "v-"+pod.Short, podGateway6.String()
	for _, c := range [][]string{
		{"-n", n.Name, "addr", "add", gw + "/128", "dev", veth, "nodad"},
		{"-n", n.Name, "-6", "route", "add", ip.String() + "/128", "dev", veth},
		{"-n", pod.Name, "addr", "add", ip.String() + "/128", "dev", "eth0", "nodad"},
		{"-n", pod.Name, "-6", "route", "add", gw, "dev", "eth0"},
		{"-n", pod.Name, "-6", "route", "add", "default", "via", gw, "dev", "eth0"},
	} {
		if _, err := run("ip", c...); err != nil {
			l.t.Fatal(err)
		}
	}
	pod.IP6 = ip
}
