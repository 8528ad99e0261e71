package gobgp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"k8s.io/klog/v2/ktesting"

	herald "github.com/heraldlb/herald/bare-metal/bgp"
)

// remote is a plain GoBGP standing in for a router, on a loopback
// address: it accepts herald's session and everything herald sends.
type remote struct {
	addr   netip.Addr
	port   int
	server *server.BgpServer
}

func freePort(t *testing.T, addr netip.Addr) int {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startRemote(t *testing.T, addr string) *remote {
	t.Helper()
	r := &remote{addr: netip.MustParseAddr(addr), server: server.NewBgpServer()}
	r.port = freePort(t, r.addr)
	go r.server.Serve()
	ctx := context.Background()
	if err := r.server.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: 64500, RouterId: addr,
		ListenPort: int32(r.port), ListenAddresses: []string{addr}}}); err != nil { //nolint:gosec // a port
		t.Fatal(err)
	}
	t.Cleanup(r.server.Stop)
	// herald's side connects from 127.0.0.1 whatever the remote's address.
	peer := &api.Peer{Conf: &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: 64512},
		Transport: &api.Transport{PassiveMode: true}, AfiSafis: basePeer().AfiSafis}
	if err := r.server.AddPeer(ctx, &api.AddPeerRequest{Peer: peer}); err != nil {
		t.Fatal(err)
	}
	return r
}

// route is what the remote received for a prefix.
type route struct {
	nextHop     string
	communities []string
	large       []string
}

func (r *remote) routes(t *testing.T) map[string]route {
	t.Helper()
	out := map[string]route{}
	for _, f := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
		err := r.server.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: f},
			func(prefix bgp.NLRI, paths []*apiutil.Path) {
				var rt route
				for _, a := range paths[0].Attrs {
					switch a := a.(type) {
					case *bgp.PathAttributeNextHop:
						rt.nextHop = a.Value.String()
					case *bgp.PathAttributeMpReachNLRI:
						rt.nextHop = a.Nexthop.String()
					case *bgp.PathAttributeCommunities:
						for _, c := range a.Value {
							rt.communities = append(rt.communities, fmt.Sprintf("%d:%d", c>>16, c&0xffff))
						}
					case *bgp.PathAttributeLargeCommunities:
						for _, c := range a.Values {
							rt.large = append(rt.large, c.String())
						}
					}
				}
				out[prefix.String()] = rt
			})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func (r *remote) describe(t *testing.T) string {
	var parts []string
	for prefix, rt := range r.routes(t) {
		parts = append(parts, fmt.Sprintf("%s via %s %v %v", prefix, rt.nextHop, rt.communities, rt.large))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

// waitRoutes polls until the remote's table reads want.
func (r *remote) waitRoutes(t *testing.T, what, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := r.describe(t)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: remote %s has %q, want %q", what, r.addr, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// events collects session events.
type events struct {
	mu  sync.Mutex
	all []herald.PeerEvent
}

func (e *events) add(ev herald.PeerEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
}

func (e *events) reached(name string, to herald.SessionState) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.ContainsFunc(e.all, func(ev herald.PeerEvent) bool { return ev.Name == name && ev.To == to })
}

// TestRouterAdvertisesPerPeer drives herald's Router against two GoBGP
// "routers" on loopback addresses and checks what each receives: the same
// prefix with each peer's own communities, attribute changes without a
// withdrawal, a withdrawal from one peer only, an IPv6 path over an IPv4
// session with the next hop herald sets, and a removed peer's routes.
func TestRouterAdvertisesPerPeer(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	a, b := startRemote(t, "127.0.0.1"), startRemote(t, "127.0.0.2")
	ev := &events{}
	r, err := New(ctx, Options{RouterID: netip.MustParseAddr("192.0.2.11"), OnPeerEvent: ev.add})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	for name, rem := range map[string]*remote{"a": a, "b": b} {
		cfg := herald.PeerConfig{Name: name, Address: rem.addr, Port: uint16(rem.port), PeerASN: 64500, LocalASN: 64512, //nolint:gosec // a port
			HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second}
		if err := r.AddPeer(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "both sessions established", func() bool {
		return ev.reached("a", herald.StateEstablished) && ev.reached("b", herald.StateEstablished)
	})
	for _, st := range r.Peers() {
		if st.State != herald.StateEstablished || st.Since.IsZero() {
			t.Errorf("Peers(): %+v, want Established with a time", st)
		}
	}

	vip := netip.MustParsePrefix("198.51.100.200/32")
	forA := herald.NewAttributes([]uint32{64500<<16 | 1}, nil)
	forB := herald.NewAttributes([]uint32{64500<<16 | 2}, []herald.LargeCommunity{{Global: 1, Local1: 2, Local2: 3}})
	apply(t, r, func() error { return r.Advertise(ctx, "a", vip, forA) }, func() error { return r.Advertise(ctx, "b", vip, forB) })
	a.waitRoutes(t, "advertised to a", "198.51.100.200/32 via 127.0.0.1 [64500:1] []")
	b.waitRoutes(t, "advertised to b", "198.51.100.200/32 via 127.0.0.1 [64500:2] [1:2:3]")

	apply(t, r, func() error { return r.Advertise(ctx, "b", vip, forA) })
	b.waitRoutes(t, "b's attributes changed", "198.51.100.200/32 via 127.0.0.1 [64500:1] []")

	apply(t, r, func() error { return r.Withdraw(ctx, "a", vip) })
	a.waitRoutes(t, "withdrawn from a", "")
	b.waitRoutes(t, "kept for b", "198.51.100.200/32 via 127.0.0.1 [64500:1] []")

	v6 := netip.MustParsePrefix("2001:db8:f::200/128")
	withNextHop := herald.Attributes{NextHop: netip.MustParseAddr("2001:db8::11")}
	apply(t, r, func() error { return r.Advertise(ctx, "a", v6, withNextHop) })
	a.waitRoutes(t, "IPv6 over the IPv4 session", "2001:db8:f::200/128 via 2001:db8::11 [] []")

	apply(t, r, func() error { return r.RemovePeer(ctx, "b") })
	b.waitRoutes(t, "b removed", "")
	a.waitRoutes(t, "a unaffected by b's removal", "2001:db8:f::200/128 via 2001:db8::11 [] []")
	if len(r.Peers()) != 1 {
		t.Errorf("Peers() after removing b: %+v", r.Peers())
	}

	// What a router sends is not imported: the agent only advertises.
	f, nlri, attrs, err := localPath(netip.MustParsePrefix("203.0.113.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.server.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{{Family: f, Nlri: nlri, Attrs: attrs}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the remote's route reached herald's adj-RIB-in", func() bool {
		n := 0
		_ = r.server.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_ADJ_IN, Name: "127.0.0.1", Family: bgp.RF_IPv4_UC},
			func(bgp.NLRI, []*apiutil.Path) { n++ })
		return n == 1
	})
	var global []string
	_ = r.server.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: bgp.RF_IPv4_UC},
		func(prefix bgp.NLRI, _ []*apiutil.Path) { global = append(global, prefix.String()) })
	if len(global) != 0 {
		t.Errorf("herald's RIB holds %v: a route received from a router was imported", global)
	}
}

func apply(t *testing.T, r *Router, steps ...func() error) {
	t.Helper()
	for _, s := range steps {
		if err := s(); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNewRefusesAnIPv6RouterID(t *testing.T) {
	if _, err := New(context.Background(), Options{RouterID: netip.MustParseAddr("2001:db8::1")}); err == nil {
		t.Fatal("New accepted an IPv6 router ID")
	}
}
