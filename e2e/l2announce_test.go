package e2e

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/e2e/labkit"
	"github.com/heraldlb/herald/e2e/netlab"
)

// The Layer 2 tier: real kube-apiserver, herald-ccm, one herald-agent per
// node namespace forwarding and answering ARP/NDP, a client on the LAN.
// Each test builds its own lab, so each runs alone with -run.

// failoverWithin bounds how long the tests wait for a new owner: the goal
// is a median under 1 s and a max under 2 s (measured by
// BenchmarkL2Failover); a loaded CI machine gets slack here.
const failoverWithin = 5 * time.Second

// The client reaches a Service through its VIP; the owner is the node the
// condition names; when its agent is killed, another node announces and
// the client's traffic moves there.
func TestL2AgentKilled(t *testing.T) {
	e := newL2Env(t)
	svc := e.CreateService("default", "web", v1.IPv4Protocol)
	addr := hostPort(vipOf(t, svc, false).String(), 80)
	owner := e.WaitAnnouncer("default", "web", "is announced", anyNode)
	if via, _, _ := e.WaitTrafficVia(addr, func(n string) bool { return n == owner }, failoverWithin); via != owner {
		t.Fatalf("traffic enters by %s, the condition names %s", via, owner)
	}
	mac := e.MACOf(owner)
	ownerMAC, ok := e.ClientNeighbour(vipOf(t, svc, false))
	if !ok || ownerMAC != mac {
		t.Fatalf("client resolves the VIP to %q, want %s's %s", ownerMAC, owner, mac)
	}

	killed := time.Now()
	e.Agents[owner].Kill()
	// The dead agent's nftables table stays, so its node still forwards:
	// what moves is who answers ARP, and with it the client's traffic.
	via, _, at := e.WaitTrafficVia(addr, func(n string) bool { return n != owner }, failoverWithin)
	t.Logf("traffic moved from %s to %s %v after the kill", owner, via, at.Sub(killed))
	if next := e.WaitAnnouncer("default", "web", "names the new owner", func(n string) bool { return n != owner }); next != via {
		t.Errorf("condition names %s, traffic enters by %s", next, via)
	}
	// What an operator sees: an event on the Service, and the new owner's
	// metrics.
	waitFor(t, waitTimeout, "an Announced event names "+via, func() bool { return e.hasEvent("web", "Announced", "from node "+via+" ") })
	ns := e.Nodes[via].Netns
	for series, atLeast := range map[string]float64{
		"herald_l2_owner_changes_total":                  1,
		`herald_l2_gratuitous_sent_total{family="IPv4"}`: 1,
		`herald_memberlist_members{state="dead"}`:        1,
		`herald_memberlist_members{state="alive"}`:       2,
		"herald_l2_fence_open":                           1,
	} {
		if got := agentMetric(t, ns, series); got < atLeast {
			t.Errorf("%s on %s = %v, want at least %v", series, via, got, atLeast)
		}
	}
}

// A node that loses power (its bridge port goes down) is replaced: the
// client, whose cached neighbour entry points at the dead node, switches
// on the new owner's gratuitous ARP.
func TestL2NodeLinkDown(t *testing.T) {
	e := newL2Env(t)
	svc := e.CreateService("default", "web", v1.IPv4Protocol)
	addr := hostPort(vipOf(t, svc, false).String(), 80)
	owner := e.WaitAnnouncer("default", "web", "is announced", anyNode)
	e.WaitTrafficVia(addr, func(n string) bool { return n == owner }, failoverWithin)

	down := time.Now()
	if err := e.Net.SetPortUp(&e.Nodes[owner].Host, false); err != nil {
		t.Fatal(err)
	}
	via, _, at := e.WaitTrafficVia(addr, func(n string) bool { return n != owner }, failoverWithin)
	t.Logf("traffic resumed through %s %v after %s's link went down", via, at.Sub(down), owner)
}

// The owner is cut off from the other nodes but not from the client: it
// must fall silent before anyone else answers, and the client never sees
// two nodes answer ARP for the VIP.
func TestL2PartitionedOwnerFallsSilentFirst(t *testing.T) {
	e := newL2Env(t)
	svc := e.CreateService("default", "web", v1.IPv4Protocol)
	vip := vipOf(t, svc, false)
	owner := e.WaitAnnouncer("default", "web", "is announced", anyNode)
	ownerMAC := e.MACOf(owner)
	watch := watchARP(t, e.Client.Netns, vip, 5*time.Millisecond)
	waitFor(t, waitTimeout, "the client's ARP watch hears the owner", func() bool { _, ok := watch.lastFrom(ownerMAC); return ok })

	var peers []*netlab.Host
	for _, n := range labkit.L2Nodes {
		if n.Name != owner {
			peers = append(peers, &e.Nodes[n.Name].Host)
		}
	}
	cut := time.Now()
	heal, err := e.Net.Partition(&e.Nodes[owner].Host, peers...)
	if err != nil {
		t.Fatal(err)
	}
	next := e.WaitAnnouncer("default", "web", "names a node on the majority side", func(n string) bool { return n != owner })
	nextMAC := e.MACOf(next)
	waitFor(t, waitTimeout, "the new owner answers the client", func() bool { _, ok := watch.firstFromOtherThan(ownerMAC, cut); return ok })
	watch.stop()
	if err := watch.splitBrain(); err != nil {
		t.Fatalf("split brain seen from the client: %v", err)
	}
	silent, _ := watch.lastFrom(ownerMAC)
	first, _ := watch.firstFromOtherThan(ownerMAC, cut)
	if first.mac != nextMAC {
		t.Errorf("first other answer from %s, want %s's %s", first.mac, next, nextMAC)
	}
	t.Logf("cut at 0: %s last answered at +%v, %s first answered at +%v (gap %v)",
		owner, silent.Sub(cut), next, first.at.Sub(cut), first.at.Sub(silent))
	if !silent.Before(first.at) {
		t.Fatalf("the old owner answered until %v, after the new one started at %v", silent.Sub(cut), first.at.Sub(cut))
	}
	if err := heal(); err != nil {
		t.Fatal(err)
	}
	// Healed, the membership merges again and someone announces.
	e.WaitAnnouncer("default", "web", "is announced after the partition heals", anyNode)
}

// A SIGTERM'd agent (a rolling update) hands its addresses over before it
// stops answering: a client that resolves the VIP afresh for every request
// (its neighbour entry flushed each time) loses none.
func TestL2GracefulHandoverLosesNoRequest(t *testing.T) {
	e := newL2Env(t)
	e.handover(t, "names the new owner", func(owner string) { e.Agents[owner].Stop(10 * time.Second) })
}

// Cordoning the owner moves its VIP to another node before maintenance,
// make before break: a client resolving the VIP for every request loses
// nothing.
func TestL2CordonMovesTheVIP(t *testing.T) {
	e := newL2Env(t)
	e.handover(t, "moves off the cordoned node", func(owner string) {
		node, err := e.Kube.CoreV1().Nodes().Get(context.Background(), owner, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		node.Spec.Unschedulable = true
		if _, err := e.Kube.CoreV1().Nodes().Update(context.Background(), node, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	})
}

// handover announces a Service, makes its owner hand it over with
// trigger, and checks that neither a request loop resolving the VIP every
// time nor an ARP watch ever found nobody answering.
func (e *l2Env) handover(t *testing.T, what string, trigger func(owner string)) {
	t.Helper()
	svc := e.CreateService("default", "web", v1.IPv4Protocol)
	addr := hostPort(vipOf(t, svc, false).String(), 80)
	owner := e.WaitAnnouncer("default", "web", "is announced", anyNode)
	e.WaitTrafficVia(addr, func(n string) bool { return n == owner }, failoverWithin)
	watch := e.watchHandover(t, vipOf(t, svc, false), owner)
	loop := e.resolvingLoop(t, addr)
	trigger(owner)
	next := e.WaitAnnouncer("default", "web", what, func(n string) bool { return n != owner })
	loop.finish(t, next)
	watch.finish(t, e.MACOf(next))
}

// handoverWatch asks for the VIP with ARP every 10 ms across a planned
// handover: make before break means every request is answered by someone.
type handoverWatch struct{ *arpWatch }

func (e *l2Env) watchHandover(t testing.TB, vip netip.Addr, owner string) handoverWatch {
	t.Helper()
	w := watchARP(t, e.Client.Netns, vip, 10*time.Millisecond)
	mac := e.MACOf(owner)
	waitFor(t, waitTimeout, "the ARP watch hears the owner", func() bool { _, ok := w.lastFrom(mac); return ok })
	return handoverWatch{w}
}

// finish waits for the new owner to answer, then fails t if any request
// went unanswered for 50 ms: a moment when no node answered ARP.
func (w handoverWatch) finish(t testing.TB, nextMAC string) {
	t.Helper()
	waitFor(t, waitTimeout, "the new owner answers ARP", func() bool { _, ok := w.lastFrom(nextMAC); return ok })
	time.Sleep(200 * time.Millisecond) // let the requests just sent be judged
	w.stop()
	if gaps := w.unanswered(50 * time.Millisecond); len(gaps) > 0 {
		t.Fatalf("%d ARP requests found no node answering during the handover, the first at %s",
			len(gaps), gaps[0].Format(time.StampMicro))
	}
}

// requestLoop sends requests to the VIP from the client, one after the
// other, until finish.
type requestLoop struct {
	e      *l2Env
	addr   string
	stop   atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	sent   int
	failed []error
	via    map[string]int
}

// resolvingLoop starts a request loop whose every request makes the
// client's kernel resolve the VIP again (ARP or NDP): a handover with a
// moment where nobody answers loses the requests of that moment, even
// though the old node, whose nftables table stays, still forwards.
func (e *l2Env) resolvingLoop(t testing.TB, addr string) *requestLoop {
	t.Helper()
	vip := netip.MustParseAddrPort(addr).Addr()
	l := &requestLoop{e: e, addr: addr, via: map[string]int{}}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for !l.stop.Load() {
			_, flushErr := e.Client.Run("ip", "neigh", "flush", "to", vip.String())
			a, err := labkit.Get(e.Client.Netns, addr, attempt)
			l.mu.Lock()
			l.sent++
			switch {
			case flushErr != nil:
				l.failed = append(l.failed, flushErr)
			case err != nil:
				l.failed = append(l.failed, err)
			default:
				l.via[e.EntryNode(vip, a)]++
			}
			l.mu.Unlock()
		}
	}()
	// The loop must cover the time before the handover too.
	waitFor(t, waitTimeout, "the request loop gets answers", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.sent-len(l.failed) >= 3
	})
	return l
}

// finish waits until traffic enters by next, stops the loop and fails t
// if any request failed.
func (l *requestLoop) finish(t testing.TB, next string) {
	t.Helper()
	waitFor(t, waitTimeout, "requests enter by the new owner "+next, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.via[next] >= 5
	})
	l.stop.Store(true)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("%d requests, entered by %v", l.sent, l.via)
	if len(l.failed) > 0 {
		t.Fatalf("%d of %d requests failed during the handover, first: %v", len(l.failed), l.sent, l.failed[0])
	}
}

// An IPv6 VIP works the same over NDP: reachable, and it fails over.
func TestL2IPv6OverNDP(t *testing.T) {
	e := newL2Env(t)
	svc := e.CreateService("default", "web6", v1.IPv6Protocol)
	addr := hostPort(vipOf(t, svc, true).String(), 80)
	owner := e.WaitAnnouncer("default", "web6", "is announced", anyNode)
	e.WaitTrafficVia(addr, func(n string) bool { return n == owner }, failoverWithin)
	e.Agents[owner].Kill()
	via, _, _ := e.WaitTrafficVia(addr, func(n string) bool { return n != owner }, failoverWithin)
	t.Logf("IPv6 traffic moved from %s to %s", owner, via)
}
