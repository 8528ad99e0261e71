package labkit

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/bare-metal/speaker"
	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/e2e/netlab"
)

// The Layer 2 lab: the lab's nodes (NodeLab) and a client on one LAN, the
// VIPs in the LAN's own subnets, so the client finds them with ARP and NDP
// as it would on a real network; nothing routes them.
//
//	client 192.0.2.100 ──┐ br0 (in its own namespace)
//	n1, n2, n3 ──────────┘
//
// IPv6 alike: client 2001:db8::100. Pool "lab": 192.0.2.200-209 and
// 2001:db8::200-209, announced by the L2Advertisement "lab".
var (
	L2PoolAddresses = []string{"192.0.2.200-192.0.2.209", "2001:db8::200-2001:db8::209"}
	L2ClientIP      = netip.MustParseAddr("192.0.2.100")
	L2ClientIP6     = netip.MustParseAddr("2001:db8::100")
)

// L2Options configure StartL2.
type L2Options struct {
	Bin Binaries
	// CRDDir holds herald's CRDs (charts/herald/crds).
	CRDDir string
	// Dir receives logs and the cloud config.
	Dir string
	// AgentArgs are added to every herald-agent's flags.
	AgentArgs []string
}

// L2 is the running Layer 2 lab with herald-ccm and one herald-agent per
// node, forwarding and announcing.
type L2 struct {
	*NodeLab
	Client *netlab.Host
	// NodeOfMAC names the node behind each LAN hardware address.
	NodeOfMAC map[string]string
}

// StartL2 builds the lab around the running cluster c and waits until
// every agent is ready.
func StartL2(t netlab.T, c *cluster.Cluster, opts L2Options) *L2 {
	t.Helper()
	args := append([]string{
		"--cluster-cidr=198.51.100.0/24,2001:db8:1::/64,2001:db8:2::/64,2001:db8:3::/64",
		"--min-sync-period=100ms",
		"--announce=layer2",
		"--v=2",
	}, opts.AgentArgs...)
	l := &L2{NodeLab: newNodes(t, c, opts.Bin, opts.CRDDir, opts.Dir, args), NodeOfMAC: map[string]string{}}
	l.Client = l.Net.AddClient("client", L2ClientIP)
	l.Net.AddIPv6(l.Client, L2ClientIP6, false)
	for name, node := range l.Nodes {
		mac, err := node.MAC()
		if err != nil {
			t.Fatal(err)
		}
		l.NodeOfMAC[mac.String()] = name
	}
	l.CreateObject(PoolGVR, "IPAddressPool", "lab", map[string]any{"addresses": toAny(L2PoolAddresses)})
	l.CreateObject(AdGVR, "L2Advertisement", "lab", map[string]any{"ipAddressPools": []any{"lab"}})
	l.startHerald()
	return l
}

// WaitService polls until cond holds for the Service, and returns it.
func WaitService(t netlab.T, client kubernetes.Interface, namespace, name, what string, cond func(*v1.Service) bool) *v1.Service {
	t.Helper()
	return WaitServiceWithin(t, client, namespace, name, what, WaitTimeout, cond)
}

// WaitServiceWithin is WaitService with a timeout of its own.
func WaitServiceWithin(t netlab.T, client kubernetes.Interface, namespace, name, what string, timeout time.Duration,
	cond func(*v1.Service) bool) *v1.Service {
	t.Helper()
	var last *v1.Service
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, timeout, true,
		func(ctx context.Context) (bool, error) {
			svc, err := client.CoreV1().Services(namespace).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil //nolint:nilerr // the apiserver may be busy; keep polling until the timeout
			}
			last = svc
			return cond(svc), nil
		})
	if err != nil {
		var status any
		var finalizers []string
		if last != nil {
			status, finalizers = last.Status, last.Finalizers
		}
		t.Fatalf("service %s/%s: %s: not within %v; last seen: status=%+v finalizers=%v", namespace, name, what, timeout,
			status, finalizers)
	}
	return last
}

// Announcer returns the node the Service's Announced condition names, if
// it is True.
func Announcer(svc *v1.Service) (string, bool) {
	c := meta.FindStatusCondition(svc.Status.Conditions, speaker.ConditionAnnounced)
	if c == nil || c.Status != metav1.ConditionTrue {
		return "", false
	}
	_, rest, found := strings.Cut(c.Message, "Announced by node ")
	if !found {
		return "", false
	}
	node, _, _ := strings.Cut(rest, " ")
	return node, true
}

// WaitAnnouncer waits until the Service is announced by a node ok accepts
// and returns it.
func (l *L2) WaitAnnouncer(namespace, name, what string, ok func(node string) bool) string {
	l.t.Helper()
	var node string
	l.WaitService(namespace, name, what, func(s *v1.Service) bool {
		n, announced := Announcer(s)
		node = n
		return announced && ok(n)
	})
	return node
}

// VIP returns the Service's address of one family.
func VIP(svc *v1.Service, v6 bool) (netip.Addr, bool) {
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(ing.IP); err == nil && a.Is6() == v6 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// MACOf returns the LAN hardware address of node.
func (l *L2) MACOf(node string) string {
	for mac, n := range l.NodeOfMAC {
		if n == node {
			return mac
		}
	}
	return ""
}

// ClientNeighbour returns the hardware address the client's kernel has for
// ip, if any.
func (l *L2) ClientNeighbour(ip netip.Addr) (string, bool) {
	out, err := l.Client.Run("ip", "neigh", "show", ip.String())
	if err != nil {
		return "", false
	}
	f := strings.Fields(out)
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1], true
		}
	}
	return "", false
}

// EntryNode returns the node a request to vip from the client entered by.
// With externalTrafficPolicy Cluster the node masquerades, so the echo pod
// sees the node's LAN address, except over IPv6 to a pod on that node,
// which sees the node's address on the pod link (the same on every node):
// then the client's neighbour entry for vip tells which node it sent to.
func (l *L2) EntryNode(vip netip.Addr, a Answer) string {
	for _, n := range L2Nodes {
		if a.From.Addr() == netip.MustParseAddr(n.IP) || a.From.Addr() == netip.MustParseAddr(n.IP6) {
			return n.Name
		}
	}
	if mac, ok := l.ClientNeighbour(vip); ok {
		if node, ok := l.NodeOfMAC[mac]; ok {
			return node
		}
	}
	return fmt.Sprintf("unknown(%s)", a.From.Addr())
}

// WaitTrafficVia polls addr from the client until a request enters by a
// node ok accepts, and returns that node, the answer and when it came.
func (l *L2) WaitTrafficVia(addr string, ok func(string) bool, timeout time.Duration) (string, Answer, time.Time) {
	l.t.Helper()
	vip := netip.MustParseAddrPort(addr).Addr()
	deadline := time.Now().Add(timeout)
	var last error
	var lastVia string
	for time.Now().Before(deadline) {
		a, err := Get(l.Client.Netns, addr, 100*time.Millisecond)
		if err == nil {
			at := time.Now()
			if lastVia = l.EntryNode(vip, a); ok(lastVia) {
				return lastVia, a, at
			}
		} else {
			last = err
		}
		time.Sleep(10 * time.Millisecond)
	}
	l.t.Fatalf("no request to %s entered by the expected node within %v (last via %q, last error %v)", addr, timeout, lastVia, last)
	return "", Answer{}, time.Time{}
}
