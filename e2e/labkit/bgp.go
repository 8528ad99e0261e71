package labkit

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/e2e/netlab"
	"github.com/heraldlb/herald/e2e/routers"
)

// The BGP lab: the lab's nodes (NodeLab) and a real router (BIRD or FRR) on
// the LAN, with a client behind the router on a subnet of its own:
//
//	client 198.51.100.70 ── router 192.0.2.1 ── br0 ── n1, n2, n3
//	  198.51.100.64/27          (AS 64500)       192.0.2.0/24 (AS 64512)
//	  2001:db8:c::/64                            2001:db8::/64
//
// Pool "bgp": 198.51.100.200-209 and 2001:db8:f::200-209, outside every
// subnet: the client reaches a VIP only through the routes the nodes
// advertise to the router (BGPPeer "router", BGPAdvertisement "bgp"). Every
// node peers with the router over IPv4; IPv6 VIPs travel over the same
// sessions (multiprotocol BGP) with the nodes' IPv6 addresses as next hops.
var (
	BGPRouterIP      = netip.MustParseAddr("192.0.2.1")
	BGPRouterIP6     = netip.MustParseAddr("2001:db8::1")
	BGPClientIP      = netip.MustParseAddr("198.51.100.70")
	BGPClientSubnet  = netip.MustParsePrefix("198.51.100.64/27")
	BGPClientIP6     = netip.MustParseAddr("2001:db8:c::100")
	BGPClientSubnet6 = netip.MustParsePrefix("2001:db8:c::/64")
	BGPPoolAddresses = []string{"198.51.100.200-198.51.100.209", "2001:db8:f::200-2001:db8:f::209"}
)

// AS numbers of the lab.
const (
	RouterASN = 64500
	NodeASN   = 64512
	// PasswordSecretNamespace is where the lab's agents read BGPPeer
	// password Secrets.
	PasswordSecretNamespace = "kube-system"
)

// BGPOptions configure StartBGP.
type BGPOptions struct {
	Bin    Binaries
	CRDDir string
	Dir    string
	// AgentArgs are added to every herald-agent's flags.
	AgentArgs []string
	Router    routers.Kind
	// Peer is added to the BGPPeer's spec (bfd, holdTime, passwordSecret).
	Peer map[string]any
	// RouterPassword is the MD5 password the router expects; "": none.
	RouterPassword string
	// RouterBFD runs BFD on the router's side (FRR).
	RouterBFD bool
	// Secrets are created in PasswordSecretNamespace before the agents
	// start: name → password (key "password").
	Secrets map[string]string
}

// BGP is the running BGP lab.
type BGP struct {
	*NodeLab
	Router     routers.Router
	RouterHost *netlab.Router
	Client     *netlab.Host
}

// StartBGP builds the lab around the running cluster c, starts the router,
// herald-ccm and the agents, and waits until every agent is ready.
func StartBGP(t netlab.T, c *cluster.Cluster, opts BGPOptions) *BGP {
	t.Helper()
	args := append([]string{
		"--cluster-cidr=198.51.100.0/26,2001:db8:1::/64,2001:db8:2::/64,2001:db8:3::/64",
		"--min-sync-period=100ms",
		"--announce=bgp",
		"--bgp-secret-namespace=" + PasswordSecretNamespace,
		"--bgp-secret-refresh=1s",
		"--v=2",
	}, opts.AgentArgs...)
	l := &BGP{NodeLab: newNodes(t, c, opts.Bin, opts.CRDDir, opts.Dir, args)}
	l.RouterHost = l.Net.AddRouter("router", BGPRouterIP, BGPRouterIP6)
	l.RouterHost.SetL4MultipathHash()
	l.Client = l.RouterHost.AddClient("client", BGPClientIP, BGPClientSubnet, BGPClientIP6, BGPClientSubnet6)
	cfg := routers.Config{ASN: RouterASN, Address: BGPRouterIP}
	for _, n := range L2Nodes {
		node := l.Nodes[n.Name]
		// Replies to the client go back through the router.
		l.Net.Route(&node.Host, BGPClientSubnet, BGPRouterIP)
		l.Net.Route(&node.Host, BGPClientSubnet6, BGPRouterIP6)
		cfg.Neighbors = append(cfg.Neighbors, routers.Neighbor{Name: n.Name, Address: node.IP, ASN: NodeASN,
			Password: opts.RouterPassword, BFD: opts.RouterBFD})
	}
	l.Router = routers.Start(t, l.Net, l.RouterHost.Netns, opts.Router, cfg)
	l.Net.OnCleanup(func() {
		if l.Net.Failed() {
			l.Net.Logf("router %s log (tail):\n%s", opts.Router, l.Router.LogTail())
		}
	})
	for name, password := range opts.Secrets {
		l.SetSecret(name, password)
	}
	peer := map[string]any{"peerAddress": BGPRouterIP.String(), "peerASN": int64(RouterASN), "localASN": int64(NodeASN)}
	maps.Copy(peer, opts.Peer)
	l.CreateObject(PoolGVR, "IPAddressPool", "bgp", map[string]any{"addresses": toAny(BGPPoolAddresses)})
	l.CreateObject(BGPPeerGVR, "BGPPeer", "router", peer)
	l.CreateObject(BGPAdGVR, "BGPAdvertisement", "bgp", map[string]any{"ipAddressPools": []any{"bgp"}})
	l.startHerald()
	return l
}

// SetSecret creates or updates a password Secret the agents may read.
func (l *BGP) SetSecret(name, password string) {
	l.t.Helper()
	ctx := context.Background()
	secrets := l.Kube.CoreV1().Secrets(PasswordSecretNamespace)
	s := &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, StringData: map[string]string{"password": password}}
	if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err == nil {
		return
	}
	if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil {
		l.t.Fatal(err)
	}
}

// NodeAddrs returns the LAN addresses of nodes, of one family, sorted: the
// next hops the router should have for them.
func NodeAddrs(v6 bool, nodes ...string) []netip.Addr {
	var out []netip.Addr
	for _, n := range L2Nodes {
		if !slices.Contains(nodes, n.Name) {
			continue
		}
		ip := n.IP
		if v6 {
			ip = n.IP6
		}
		out = append(out, netip.MustParseAddr(ip))
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// NextHops returns the router's kernel next hops toward vip's /32 or /128.
func (l *BGP) NextHops(vip netip.Addr) ([]netip.Addr, error) {
	return routers.NextHops(l.RouterHost.Netns, netip.PrefixFrom(vip, vip.BitLen()))
}

// WaitNextHops polls the router's kernel table every poll until the route to
// vip has exactly want as next hops (none: no route), and returns when it
// saw that.
func (l *BGP) WaitNextHops(vip netip.Addr, want []netip.Addr, poll, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	var last []netip.Addr
	var lastErr error
	for {
		got, err := l.NextHops(vip)
		now := time.Now()
		if err == nil && slices.Equal(got, want) {
			return now, nil
		}
		last, lastErr = got, err
		if now.After(deadline) {
			return time.Time{}, errors.Join(fmt.Errorf("the router's route to %s has next hops %v, want %v, not within %v",
				vip, last, want, timeout), lastErr)
		}
		time.Sleep(poll)
	}
}

// WaitEstablished waits until the router has an established session with
// every node.
func (l *BGP) WaitEstablished(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, n := range L2Nodes {
		for {
			up, err := l.Router.Established(netip.MustParseAddr(n.IP))
			if up {
				break
			}
			if time.Now().After(deadline) {
				return errors.Join(fmt.Errorf("the router's session with %s is not established within %v", n.Name, timeout), err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// EntryNode returns the node a request entered the cluster by, from what
// the echo pod saw: with externalTrafficPolicy Cluster the node masquerades
// to its own address toward the pod, its LAN address unless the pod is its
// own and the family IPv6 (then the pods' gateway address).
func EntryNode(a Answer) (string, bool) {
	for _, n := range L2Nodes {
		if a.From.Addr() == netip.MustParseAddr(n.IP) || a.From.Addr() == netip.MustParseAddr(n.IP6) {
			return n.Name, true
		}
		if a.From.Addr() == netlab.PodGateway6() && a.Pod == n.Pod {
			return n.Name, true
		}
	}
	return "", false
}
