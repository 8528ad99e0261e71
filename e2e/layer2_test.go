package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/heraldlb/herald/bare-metal/layer2"
	"github.com/heraldlb/herald/e2e/netlab"
)

// The layer-2 test's LAN: the announcing node and a client on one bridge,
// VIPs in the LAN's own subnets, so the client resolves them on the link.
var (
	l2NodeIP    = netip.MustParseAddr("192.0.2.11")
	l2NodeIP6   = netip.MustParseAddr("2001:db8::11")
	l2ClientIP  = netip.MustParseAddr("192.0.2.100")
	l2ClientIP6 = netip.MustParseAddr("2001:db8::100")
	// bogusMAC stands for a previous owner in the client's neighbour table.
	bogusMAC = "02:00:00:00:00:99"
)

// l2Lab is a node running a layer2.Announcer with real sockets, and a
// client on the same bridge.
type l2Lab struct {
	lab          *netlab.Lab
	node, client *netlab.Host
	a            *layer2.Announcer
	reg          *prometheus.Registry
	gate         atomic.Bool
	announced    chan netip.Addr
	nodeMAC      string
}

func newL2Lab(t *testing.T) *l2Lab {
	t.Helper()
	lab := netlab.New(t) // skips unless root with ip, nft and sysctl
	l := &l2Lab{lab: lab, reg: prometheus.NewRegistry(), announced: make(chan netip.Addr, 100)}
	l.node = lab.AddClient("l2node", l2NodeIP)
	l.client = lab.AddClient("l2client", l2ClientIP)
	lab.AddIPv6(l.node, l2NodeIP6, false)
	lab.AddIPv6(l.client, l2ClientIP6, false)
	// The client gives up on an unanswered address after two probes 200 ms
	// apart (defaults: three, 1 s apart), so "not answered" shows soon.
	if out, err := l.client.Run("sysctl", "-qw",
		"net.ipv4.neigh.eth0.mcast_solicit=2", "net.ipv4.neigh.eth0.retrans_time_ms=200",
		"net.ipv6.neigh.eth0.mcast_solicit=2", "net.ipv6.neigh.eth0.retrans_time_ms=200"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	l.nodeMAC = linkMAC(t, l.node)
	l.gate.Store(true)
	a, err := layer2.New(layer2.Options{
		// The sockets are created on a thread inside the node's namespace
		// and stay in it; reading and writing them works from any thread.
		InterfaceByName: func(name string) (ifi *net.Interface, err error) {
			err = l.node.Do(func() error { ifi, err = net.InterfaceByName(name); return err })
			return ifi, err
		},
		OpenARP: func(ifi *net.Interface) (c net.PacketConn, err error) {
			err = l.node.Do(func() error { c, err = layer2.ListenARP(ifi); return err })
			return c, err
		},
		OpenNDP: func(ifi *net.Interface) (c layer2.NDPConn, err error) {
			err = l.node.Do(func() error { c, err = layer2.ListenNDP(ifi); return err })
			return c, err
		},
		Gate: l.gate.Load,
		// One frame per gain: the neighbour-table checks below must owe
		// nothing to repeats.
		Burst:       []time.Duration{0},
		OnAnnounced: func(_ string, vip netip.Addr) { l.announced <- vip },
		Registerer:  l.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	l.a = a
	// Before the namespaces go (the lab's cleanup was registered first, so
	// it runs after this one).
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("closing the announcer: %v", err)
		}
	})
	return l
}

func linkMAC(t *testing.T, h *netlab.Host) string {
	t.Helper()
	out, err := h.Run("ip", "-j", "link", "show", "dev", "eth0")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip link output %q: %v", out, err)
	}
	return links[0].Address
}

// neighbour is the client's neighbour-table entry for an address.
type neighbour struct {
	LLAddr string   `json:"lladdr"`
	State  []string `json:"state"`
}

func (n neighbour) is(state string) bool {
	for _, s := range n.State {
		if s == state {
			return true
		}
	}
	return false
}

func (l *l2Lab) neighbour(t *testing.T, ip netip.Addr) (neighbour, bool) {
	t.Helper()
	out, err := l.client.Run("ip", "-j", "neigh", "show", "to", ip.String(), "dev", "eth0")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var ns []neighbour
	if err := json.Unmarshal([]byte(out), &ns); err != nil {
		t.Fatalf("ip neigh output %q: %v", out, err)
	}
	if len(ns) == 0 {
		return neighbour{}, false
	}
	return ns[0], true
}

// waitNeighbour polls the client's entry for ip until ok accepts it.
func (l *l2Lab) waitNeighbour(t *testing.T, ip netip.Addr, what string, ok func(neighbour) bool) neighbour {
	t.Helper()
	var last neighbour
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) {
			n, found := l.neighbour(t, ip)
			last = n
			return found && ok(n), nil
		})
	if err != nil {
		t.Fatalf("client's neighbour entry for %v never %s; last %+v", ip, what, last)
	}
	return last
}

// resolve makes the client's kernel resolve ip, by sending it a datagram.
func (l *l2Lab) resolve(t *testing.T, ip netip.Addr) {
	t.Helper()
	if out, err := l.client.Run("ip", "neigh", "flush", "to", ip.String(), "dev", "eth0"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	conn, err := l.client.DialContext(context.Background(), "udp", net.JoinHostPort(ip.String(), "9"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("who has it?")); err != nil {
		t.Fatal(err)
	}
}

// setClientNeighbour plants an entry as a previous owner would have left
// it.
func (l *l2Lab) setClientNeighbour(t *testing.T, ip netip.Addr, mac, state string) {
	t.Helper()
	if out, err := l.client.Run("ip", "neigh", "replace", ip.String(), "lladdr", mac, "dev", "eth0", "nud", state); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
}

func (l *l2Lab) set(t *testing.T, vips ...netip.Addr) {
	t.Helper()
	if err := l.a.Set(context.Background(), map[string][]netip.Addr{"eth0": vips}); err != nil {
		t.Fatal(err)
	}
}

func (l *l2Lab) counter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := l.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func (l *l2Lab) waitCounter(t *testing.T, min float64, name string, labels ...string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) { return l.counter(t, name, labels...) >= min, nil })
	if err != nil {
		t.Fatalf("%s%v never reached %v: %v", name, labels, min, l.counter(t, name, labels...))
	}
}

// TestLayer2Responder runs the ARP/NDP responder on real packet sockets in a
// network namespace and checks, from a client namespace on the same bridge,
// what the client's kernel learns.
func TestLayer2Responder(t *testing.T) {
	l := newL2Lab(t)
	owned, unowned := netip.MustParseAddr("192.0.2.200"), netip.MustParseAddr("192.0.2.201")
	owned6 := netip.MustParseAddr("2001:db8::200")
	l.set(t, owned, owned6)

	t.Run("ARP request for an owned VIP is answered with the node's MAC", func(t *testing.T) {
		l.resolve(t, owned)
		n := l.waitNeighbour(t, owned, "resolved", func(n neighbour) bool { return n.LLAddr != "" })
		if n.LLAddr != l.nodeMAC {
			t.Errorf("client resolved %v to %s, want the node's %s", owned, n.LLAddr, l.nodeMAC)
		}
	})

	t.Run("ARP request for another address is not answered", func(t *testing.T) {
		before := l.counter(t, "herald_l2_frames_ignored_total", "family", "IPv4", "reason", "not_owned")
		l.resolve(t, unowned)
		l.waitNeighbour(t, unowned, "failed", func(n neighbour) bool { return n.is("FAILED") })
		// The requests did reach the responder, which chose silence.
		l.waitCounter(t, before+1, "herald_l2_frames_ignored_total", "family", "IPv4", "reason", "not_owned")
	})

	t.Run("ARP probe from 0.0.0.0 is answered", func(t *testing.T) {
		reply := l.arpProbe(t, owned)
		if reply.SenderHardwareAddr.String() != l.nodeMAC || reply.TargetIP != netip.IPv4Unspecified() {
			t.Errorf("probe answered by %v for %v, want %s to 0.0.0.0", reply.SenderHardwareAddr, reply.TargetIP,
				l.nodeMAC)
		}
	})

	t.Run("gratuitous ARP on gain replaces a fresh entry", func(t *testing.T) {
		// A REACHABLE entry just written is within Linux's locktime: only a
		// frame the kernel takes as gratuitous may replace it.
		l.gainReplaces(t, netip.MustParseAddr("192.0.2.202"), "reachable", owned, owned6)
	})

	t.Run("fenced: nothing answered; reopened: answered without Set", func(t *testing.T) {
		l.gate.Store(false)
		t.Cleanup(func() { l.gate.Store(true) }) // whatever happens here
		before := l.counter(t, "herald_l2_sends_fenced_total", "family", "IPv4", "kind", "reply")
		l.resolve(t, owned)
		l.waitNeighbour(t, owned, "failed", func(n neighbour) bool { return n.is("FAILED") })
		l.waitCounter(t, before+1, "herald_l2_sends_fenced_total", "family", "IPv4", "kind", "reply")
		l.gate.Store(true)
		l.resolve(t, owned)
		l.waitNeighbour(t, owned, "resolved to the node", func(n neighbour) bool { return n.LLAddr == l.nodeMAC })
	})

	t.Run("NDP: multicast solicitation answered, group joined and reported", func(t *testing.T) {
		group := "ff02::1:ff00:200"
		if out, err := l.node.Run("ip", "-6", "maddr", "show", "dev", "eth0"); err != nil || !strings.Contains(out, group) {
			t.Fatalf("node's eth0 has not joined %s (%v):\n%s", group, err, out)
		}
		l.waitMDB(t, group, true)
		l.resolve(t, owned6)
		n := l.waitNeighbour(t, owned6, "resolved", func(n neighbour) bool { return n.LLAddr != "" })
		if n.LLAddr != l.nodeMAC {
			t.Errorf("client resolved %v to %s, want the node's %s", owned6, n.LLAddr, l.nodeMAC)
		}
	})

	t.Run("NDP: unicast NUD solicitation without link-layer option answered", func(t *testing.T) {
		na := l.unicastSolicit(t, owned6)
		if !na.Solicited || !na.Override || len(na.Options) == 0 {
			t.Errorf("answer %+v: want solicited, override, with the target link-layer address", na)
		}
	})

	t.Run("NDP: unsolicited advertisement on gain replaces the entry", func(t *testing.T) {
		l.gainReplaces(t, netip.MustParseAddr("2001:db8::202"), "stale", owned, owned6)
	})

	t.Run("NDP: group left on loss", func(t *testing.T) {
		// 2001:db8::202 keeps the socket open: this is the explicit leave.
		l.set(t, owned, netip.MustParseAddr("2001:db8::202"))
		if out, err := l.node.Run("ip", "-6", "maddr", "show", "dev", "eth0"); err != nil || strings.Contains(out, "ff02::1:ff00:200") {
			t.Fatalf("node's eth0 still in ff02::1:ff00:200 after losing %v (%v):\n%s", owned6, err, out)
		}
	})

	t.Run("a missing interface fails alone", func(t *testing.T) {
		err := l.a.Set(context.Background(), map[string][]netip.Addr{"eth0": {owned}, "eth9": {unowned}})
		var ie *layer2.InterfaceError
		if !errors.As(err, &ie) || ie.Interface != "eth9" {
			t.Fatalf("Set with a missing interface: %v, want an InterfaceError for eth9", err)
		}
		l.resolve(t, owned)
		l.waitNeighbour(t, owned, "resolved to the node", func(n neighbour) bool { return n.LLAddr == l.nodeMAC })
	})
}

// gainReplaces plants a previous owner's entry for gained in the client
// (in state), gains it beside kept, and waits for the client to switch to
// the node: the burst is one frame, so that frame did it.
func (l *l2Lab) gainReplaces(t *testing.T, gained netip.Addr, state string, kept ...netip.Addr) {
	t.Helper()
	l.setClientNeighbour(t, gained, bogusMAC, state)
	start := time.Now()
	l.set(t, append(kept, gained)...)
	l.waitNeighbour(t, gained, "switched to the node", func(n neighbour) bool { return n.LLAddr == l.nodeMAC })
	t.Logf("client switched %v after %v (one gratuitous frame; from Set, including polling `ip neigh`)", gained,
		time.Since(start).Round(time.Millisecond))
	l.waitAnnounced(t, gained)
}

// waitAnnounced waits for OnAnnounced to report vip.
func (l *l2Lab) waitAnnounced(t *testing.T, vip netip.Addr) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case got := <-l.announced:
			if got == vip {
				return
			}
		case <-timeout:
			t.Fatalf("OnAnnounced never reported %v", vip)
		}
	}
}

// arpProbe sends an RFC 5227 probe for ip from the client, as arping -D
// does, and returns the reply.
func (l *l2Lab) arpProbe(t *testing.T, ip netip.Addr) *arp.Packet {
	t.Helper()
	var c *arp.Client
	err := l.client.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c, err = arp.Dial(ifi)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	probe, err := arp.NewPacket(arp.OperationRequest, c.HardwareAddr(), netip.IPv4Unspecified(),
		net.HardwareAddr{0, 0, 0, 0, 0, 0}, ip)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteTo(probe, ethernet.Broadcast); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for {
		p, _, err := c.Read()
		if err != nil {
			t.Fatalf("no answer to the probe for %v: %v", ip, err)
		}
		if p.Operation == arp.OperationReply && p.SenderIP == ip {
			return p
		}
	}
}

// unicastSolicit sends, from the client, the solicitation a neighbour
// sends to confirm its entry: unicast to ip, without a source link-layer
// option (RFC 4861 §7.2.2 allows omitting it). The client's entry is made
// permanent first, so its kernel sends nothing of its own: the only
// solicitation is this one.
func (l *l2Lab) unicastSolicit(t *testing.T, ip netip.Addr) *ndp.NeighborAdvertisement {
	t.Helper()
	l.setClientNeighbour(t, ip, l.nodeMAC, "permanent")
	defer func() {
		if out, err := l.client.Run("ip", "neigh", "del", ip.String(), "dev", "eth0"); err != nil {
			t.Errorf("%v: %s", err, out)
		}
	}()
	var c *ndp.Conn
	err := l.client.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c, _, err = ndp.Listen(ifi, ndp.Addr(l2ClientIP6.String()))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := l.counter(t, "herald_l2_replies_sent_total", "family", "IPv6")
	if err := c.WriteTo(&ndp.NeighborSolicitation{TargetAddress: ip}, nil, ip); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for {
		m, _, from, err := c.ReadFrom()
		if err != nil {
			t.Fatalf("no answer to a unicast solicitation for %v (replies sent before: %v, now: %v): %v", ip, before,
				l.counter(t, "herald_l2_replies_sent_total", "family", "IPv6"), err)
		}
		if na, ok := m.(*ndp.NeighborAdvertisement); ok && na.TargetAddress == ip {
			if from.WithZone("") != ip {
				t.Errorf("advertisement from %v, want from %v", from, ip)
			}
			return na
		}
	}
}

// waitMDB waits until the LAN bridge has (or has not) learned, from the
// node's MLD report, that the node's port wants group.
func (l *l2Lab) waitMDB(t *testing.T, group string, want bool) {
	t.Helper()
	bridge := l.lab.Bridge()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) {
			out, err := bridge.Run("bridge", "-j", "mdb", "show")
			if err != nil {
				return false, fmt.Errorf("%w: %s", err, out)
			}
			last = out
			var mdb []struct {
				MDB []struct {
					Port string `json:"port"`
					Grp  string `json:"grp"`
				} `json:"mdb"`
			}
			if err := json.Unmarshal([]byte(out), &mdb); err != nil {
				return false, fmt.Errorf("bridge mdb output %q: %w", out, err)
			}
			for _, br := range mdb {
				for _, e := range br.MDB {
					if e.Grp == group && e.Port == "p-l2node" {
						return want, nil
					}
				}
			}
			return !want, nil
		})
	if err != nil {
		t.Fatalf("bridge membership of %s on the node's port never became %s: %v; mdb: %s", group,
			strconv.FormatBool(want), err, last)
	}
}
