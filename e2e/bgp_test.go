package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/e2e/labkit"
	"github.com/heraldlb/herald/e2e/routers"
)

// The BGP tier: herald-agent on three nodes advertising VIPs to a real
// router (BIRD 2 and FRR), which installs them in its kernel table, and a
// client behind the router that reaches the VIPs only through those routes.

func TestBGPBIRD(t *testing.T) { testBGPRouting(t, routers.BIRD) }

func TestBGPFRR(t *testing.T) { testBGPRouting(t, routers.FRR) }

// testBGPRouting proves, against one router: ECMP over every node for an
// externalTrafficPolicy Cluster Service, in both families (IPv6 over the
// IPv4 sessions: multiprotocol BGP), with the client's traffic reaching
// the backends through the VIPs; only the nodes with a ready local
// endpoint for a Local Service, following the endpoints as they move; and
// withdrawal when the Services go.
func testBGPRouting(t *testing.T, kind routers.Kind) {
	e := newBGPEnv(t, kind, labkit.BGPOptions{})
	if err := e.WaitEstablished(routeWithin); err != nil {
		t.Fatal(err)
	}
	e.waitPeer("every node's session is Established", func(p *v1alpha1.BGPPeer) bool {
		states := nodeStates(p)
		for _, n := range allNodes() {
			if !strings.HasPrefix(states[n], "Established/") {
				return false
			}
		}
		return true
	})

	// Policy Cluster: ECMP over every node, in both families.
	{
		svc := e.CreateService("default", "web", v1.IPv4Protocol, v1.IPv6Protocol)
		for _, v6 := range []bool{false, true} {
			vip := vipOf(t, svc, v6)
			e.waitNextHops(vip, allNodes()...)
			// The router's L4 hash spreads connections over every node...
			e.warmUp(vip, entryKey, allNodes())
			// ...and then every request is answered, entering by an
			// advertising node (which masquerades with policy Cluster).
			got := e.entries(vip, 30)
			for node := range got {
				if !slices.Contains(allNodes(), node) {
					t.Errorf("a request to %s did not enter by a node: %v", vip, got)
				}
			}
		}
		svc = e.WaitService("default", "web", "has its BGPAdvertised condition", func(s *v1.Service) bool {
			c := bgpCondition(s)
			return c != nil && c.Status == metav1.ConditionTrue
		})

		e.deleteService("web")
		for _, v6 := range []bool{false, true} {
			e.waitNextHops(vipOf(t, svc, v6))
		}
	}

	// Policy Local: only the nodes with a ready endpoint advertise.
	{
		svc := e.CreateServiceWith("default", "local", labkit.ServiceOptions{
			Families: []v1.IPFamily{v1.IPv4Protocol}, Local: true, EndpointNodes: []string{"n1", "n2"}})
		vip := vipOf(t, svc, false)
		e.waitNextHops(vip, "n1", "n2")
		e.warmUp(vip, podKey, []string{"a1", "b1"})
		e.expectPods(vip, "a1", "b1")

		// The endpoint moves to n3: n3 advertises, n1 and n2 withdraw.
		e.SetServiceEndpoints("default", "local", []v1.IPFamily{v1.IPv4Protocol}, []string{"n3"})
		e.waitNextHops(vip, "n3")
		e.warmUp(vip, podKey, []string{"c1"})
		e.expectPods(vip, "c1")

		e.deleteService("local")
		e.waitNextHops(vip)
	}
}

// TestBGPPassword proves that an MD5-protected session comes up only with
// the right password from the BGPPeer's Secret: with a wrong one the
// router's kernel drops the nodes' segments (TcpExtTCPMD5Failure counts
// them) and no session is up; once the Secret holds the right password,
// the agents reconnect with it and the routes arrive.
func TestBGPPassword(t *testing.T) {
	const secret = "router-bgp"
	e := newBGPEnv(t, routers.BIRD, labkit.BGPOptions{
		RouterPassword: "right-password",
		Secrets:        map[string]string{secret: "wrong-password"},
		Peer:           map[string]any{"passwordSecret": map[string]any{"name": secret, "key": "password"}},
	})
	before := e.md5Failures()
	waitFor(t, routeWithin, "the router's kernel rejects the nodes' wrong MD5 signatures", func() bool {
		return e.md5Failures() > before
	})
	for _, n := range labkit.L2Nodes {
		if up, err := e.Router.Established(netip.MustParseAddr(n.IP)); up || err != nil {
			t.Fatalf("session with %s: established=%v (err %v) with the wrong password", n.Name, up, err)
		}
	}
	svc := e.CreateService("default", "web", v1.IPv4Protocol)
	vip := vipOf(t, svc, false)
	if hops, err := e.NextHops(vip); len(hops) != 0 || err != nil {
		t.Fatalf("the router routes %s over %v (err %v) without a session", vip, hops, err)
	}

	e.SetSecret(secret, "right-password")
	if err := e.WaitEstablished(routeWithin); err != nil {
		t.Fatal(err)
	}
	e.waitNextHops(vip, allNodes()...)
}

// TestBGPFRRBFD proves BFD between GoBGP and FRR's bfdd: with a hold time
// of 90 s, a node that fails at its bridge port loses its next hop in the
// router's kernel table because BFD saw it go, long before the hold timer
// could have; when the port comes back, so does the route.
// BenchmarkBGPNodeFailure measures how long it takes.
func TestBGPFRRBFD(t *testing.T) {
	e := newBGPEnv(t, routers.FRR, bfdOptions("90s"))
	f := e.frr()
	e.waitBFDUp(f)
	svc := e.CreateService("default", "web", v1.IPv4Protocol)
	vip := vipOf(t, svc, false)
	e.waitNextHops(vip, allNodes()...)

	failed := time.Now()
	if err := e.Net.SetPortUp(&e.Nodes["n1"].Host, false); err != nil {
		t.Fatal(err)
	}
	gone := e.waitNextHops(vip, "n2", "n3")
	took := gone.Sub(failed)
	t.Logf("n1 failed; its next hop left FRR's kernel route after %v", took.Round(time.Millisecond))
	n, err := f.Neighbor(e.Nodes["n1"].IP)
	if err != nil {
		t.Fatal(err)
	}
	if n.State == "Established" || n.LastNotificationReason != "Cease/BFD Down" {
		t.Errorf("FRR's session with n1: state %q, last reset due to %q (%q); want down by BFD",
			n.State, n.LastResetDueTo, n.LastNotificationReason)
	}
	// Without BFD the route would stay until the 90 s hold timer expired;
	// the bound is far below that, and far above BFD's 300 ms.
	if took > 30*time.Second {
		t.Errorf("the route went %v after the failure: the hold timer's doing, not BFD's", took)
	}

	if err := e.Net.SetPortUp(&e.Nodes["n1"].Host, true); err != nil {
		t.Fatal(err)
	}
	e.waitNextHops(vip, allNodes()...)
	e.waitBFDUp(f)
	// BFD coming up never reset a session (GoBGP resets BGP when its BFD
	// session goes down, as when FRR replaces its BFD session): n1's was
	// dropped once, by the failure, the others never.
	for _, node := range labkit.L2Nodes {
		n, err := f.Neighbor(netip.MustParseAddr(node.IP))
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: 1, false: 0}[node.Name == "n1"]; n.ConnectionsDropped != want {
			t.Errorf("FRR dropped its session with %s %d times, want %d (last reset due to %q, %q)",
				node.Name, n.ConnectionsDropped, want, n.LastResetDueTo, n.LastNotificationReason)
		}
	}
}

// bfdOptions is a lab with BFD on both sides at 100 ms intervals (FRR's
// profile and the BGPPeer's), and hold time hold.
func bfdOptions(hold string) labkit.BGPOptions {
	return labkit.BGPOptions{RouterBFD: true, Peer: map[string]any{
		"holdTime": hold,
		"bfd":      map[string]any{"receiveInterval": "100ms", "transmitInterval": "100ms", "detectMultiplier": int64(3)},
	}}
}

// waitBFDUp waits until every node's session is established with BFD up,
// as FRR and the BGPPeer's status both see it.
func (e *bgpEnv) waitBFDUp(f routers.FRRRouter) {
	e.t.Helper()
	waitFor(e.t, routeWithin, "FRR's sessions are up with BFD up", func() bool {
		for _, n := range labkit.L2Nodes {
			s, err := f.Neighbor(netip.MustParseAddr(n.IP))
			if err != nil || s.State != "Established" || s.PeerBFDInfo == nil || s.PeerBFDInfo.Status != "Up" {
				return false
			}
		}
		return true
	})
	e.waitPeer("every node reports BFD Up", func(p *v1alpha1.BGPPeer) bool {
		states := nodeStates(p)
		for _, n := range allNodes() {
			if states[n] != "Established/Up" {
				return false
			}
		}
		return true
	})
}

// expectPods asks vip 20 times and fails unless the answers came from
// exactly pods (Local policy: no hop to another node's pod).
func (e *bgpEnv) expectPods(vip netip.Addr, pods ...string) {
	e.t.Helper()
	seen := map[string]bool{}
	for i := range 20 {
		a, err := labkit.Get(e.Client.Netns, hostPort(vip.String(), 80), labkit.Attempt)
		if err != nil {
			e.t.Fatalf("request %d to %s: %v", i+1, vip, err)
		}
		if a.From.Addr() != e.Client.IP {
			e.t.Errorf("the pod saw %s, not the client %s: the source was not preserved", a.From.Addr(), e.Client.IP)
		}
		seen[a.Pod] = true
	}
	if got := slices.Sorted(maps.Keys(seen)); !slices.Equal(got, pods) {
		e.t.Errorf("answers to %s came from pods %v, want %v", vip, got, pods)
	}
}

// warmUp sends requests from the client to vip until each of want has
// answered (keyOf names who did), tolerating failures meanwhile: the router
// learns a route as soon as a node advertises it, which can be before that
// node's data plane has the Service's endpoints (see the README).
func (e *bgpEnv) warmUp(vip netip.Addr, keyOf func(labkit.Answer) string, want []string) {
	e.t.Helper()
	seen := map[string]bool{}
	waitFor(e.t, routeWithin, fmt.Sprintf("answers to %s from each of %v", vip, want), func() bool {
		a, err := labkit.Get(e.Client.Netns, hostPort(vip.String(), 80), labkit.Attempt)
		if err == nil {
			seen[keyOf(a)] = true
		}
		for _, w := range want {
			if !seen[w] {
				return false
			}
		}
		return true
	})
}

// entryKey names the node a request entered by.
func entryKey(a labkit.Answer) string {
	if node, ok := labkit.EntryNode(a); ok {
		return node
	}
	return "pod-saw-" + a.From.Addr().String()
}

// podKey names the pod that answered.
func podKey(a labkit.Answer) string { return a.Pod }

// deleteService deletes Service default/name.
func (e *bgpEnv) deleteService(name string) {
	e.t.Helper()
	if err := e.Kube.CoreV1().Services("default").Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
}
