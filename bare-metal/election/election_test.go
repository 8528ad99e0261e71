package election

import (
	"fmt"
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func node(name string, mutate ...func(*v1.Node)) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"zone": "a"}},
		Status: v1.NodeStatus{Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue}}}}
	for _, m := range mutate {
		m(n)
	}
	return n
}

func notReady(n *v1.Node) { n.Status.Conditions[0].Status = v1.ConditionFalse }
func cordoned(n *v1.Node) { n.Spec.Unschedulable = true }
func excluded(n *v1.Node) { n.Labels[v1.LabelNodeExcludeBalancers] = "" }
func zoneB(n *v1.Node)    { n.Labels["zone"] = "b" }
func outOfService(n *v1.Node) {
	n.Spec.Taints = append(n.Spec.Taints, v1.Taint{Key: TaintOutOfService, Effect: v1.TaintEffectNoExecute})
}

var everyNode = func(*v1.Node) bool { return true }

func alive(names ...string) map[string]Member {
	m := map[string]Member{}
	for _, n := range names {
		m[n] = Member{State: MemberAlive}
	}
	return m
}

// ownerAmong is the owner Decide elects when exactly these nodes are
// eligible, computed independently of Decide's loop.
func ownerAmong(key string, nodes ...string) string {
	best, owner := uint64(0), ""
	for _, n := range nodes {
		if s := score(n, key); owner == "" || s > best {
			best, owner = s, n
		}
	}
	return owner
}

const key = "192.0.2.200"

func TestDecide(t *testing.T) {
	three := []*v1.Node{node("n1"), node("n2"), node("n3")}
	winner := ownerAmong(key, "n1", "n2", "n3")
	others := map[string][]string{"n1": {"n2", "n3"}, "n2": {"n1", "n3"}, "n3": {"n1", "n2"}}[winner]
	runnerUp := ownerAmong(key, others...)

	tests := []struct {
		name       string
		in         CandidateInput
		self       string
		wantOwner  string
		wantReason Reason
	}{
		{name: "all healthy: the winner announces", self: winner, wantOwner: winner, wantReason: ReasonOwner,
			in: CandidateInput{Nodes: three, Selected: everyNode, Members: alive("n1", "n2", "n3")}},
		{name: "all healthy: another node does not", self: others[0], wantOwner: winner, wantReason: ReasonNotOwner,
			in: CandidateInput{Nodes: three, Selected: everyNode, Members: alive("n1", "n2", "n3")}},
		{name: "owner's agent dead: the runner-up takes over", self: runnerUp, wantOwner: runnerUp, wantReason: ReasonOwner,
			in: CandidateInput{Nodes: three, Selected: everyNode, Members: alive(others...)}},
		{name: "owner's agent suspect: still the owner (no flapping on suspicion)", self: winner, wantOwner: winner, wantReason: ReasonOwner,
			in: CandidateInput{Nodes: three, Selected: everyNode, Members: func() map[string]Member {
				m := alive(others...)
				m[winner] = Member{State: MemberSuspect}
				return m
			}()}},
		{name: "owner draining: hands over", self: winner, wantOwner: runnerUp, wantReason: ReasonDraining,
			in: CandidateInput{Nodes: three, Selected: everyNode, Members: func() map[string]Member {
				m := alive(others...)
				m[winner] = Member{State: MemberAlive, Draining: true}
				return m
			}()}},
		{name: "owner left: runner-up", self: runnerUp, wantOwner: runnerUp, wantReason: ReasonOwner,
			in: CandidateInput{Nodes: three, Selected: everyNode, Members: func() map[string]Member {
				m := alive(others...)
				m[winner] = Member{State: MemberLeft}
				return m
			}()}},
		{name: "owner cordoned", self: winner, wantOwner: runnerUp, wantReason: ReasonCordoned,
			in: CandidateInput{Nodes: replace(three, winner, cordoned), Selected: everyNode, Members: alive("n1", "n2", "n3")}},
		{name: "owner not ready", self: winner, wantOwner: runnerUp, wantReason: ReasonNotReady,
			in: CandidateInput{Nodes: replace(three, winner, notReady), Selected: everyNode, Members: alive("n1", "n2", "n3")}},
		{name: "owner out of service", self: winner, wantOwner: runnerUp, wantReason: ReasonOutOfService,
			in: CandidateInput{Nodes: replace(three, winner, outOfService), Selected: everyNode, Members: alive("n1", "n2", "n3")}},
		{name: "owner excluded from load balancers", self: winner, wantOwner: runnerUp, wantReason: ReasonExcluded,
			in: CandidateInput{Nodes: replace(three, winner, excluded), Selected: everyNode, Members: alive("n1", "n2", "n3")}},
		{name: "node selector moves the address to the selected node", self: winner, wantOwner: others[1], wantReason: ReasonNotSelected,
			in: CandidateInput{Nodes: replace(three, others[1], zoneB), Members: alive("n1", "n2", "n3"),
				Selected: func(n *v1.Node) bool { return n.Labels["zone"] == "b" }}},
		{name: "ETP Local: only nodes with a local endpoint", self: winner, wantOwner: others[0], wantReason: ReasonNoLocalEndpoints,
			in: CandidateInput{Nodes: three, Selected: everyNode, Members: alive("n1", "n2", "n3"),
				LocalEndpoints: map[string]bool{others[0]: true}}},
		{name: "ETP Local: endpoints moved back to the winner", self: winner, wantOwner: winner, wantReason: ReasonOwner,
			in: CandidateInput{Nodes: three, Selected: everyNode, Members: alive("n1", "n2", "n3"),
				LocalEndpoints: map[string]bool{others[0]: true, winner: true}}},
		{name: "ETP Local without endpoints: nobody", self: winner, wantOwner: "", wantReason: ReasonNoLocalEndpoints,
			in: CandidateInput{Nodes: three, Selected: everyNode, Members: alive("n1", "n2", "n3"), LocalEndpoints: map[string]bool{}}},
		{name: "partition seen from the cut-off node: it alone is alive", self: winner, wantOwner: winner, wantReason: ReasonOwner,
			in: CandidateInput{Nodes: three, Selected: everyNode, Members: alive(winner)}},
		{name: "partition seen from the majority: the cut-off node is dead", self: runnerUp, wantOwner: runnerUp, wantReason: ReasonOwner,
			in: CandidateInput{Nodes: three, Selected: everyNode, Members: alive(others...)}},
		{name: "node unknown to Kubernetes never announces", self: "n9", wantOwner: winner, wantReason: ReasonNotSelected,
			in: CandidateInput{Nodes: three, Selected: everyNode, Members: alive("n1", "n2", "n3", "n9")}},
		{name: "no nodes", self: "n1", wantOwner: "", wantReason: ReasonNotSelected,
			in: CandidateInput{Selected: everyNode}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Decide(tt.self, key, Candidates(tt.in))
			if got.Owner != tt.wantOwner || got.Reason != tt.wantReason || got.Announce != (tt.wantReason == ReasonOwner) {
				t.Errorf("Decide(%s) = %+v, want owner %q reason %s", tt.self, got, tt.wantOwner, tt.wantReason)
			}
		})
	}
}

func replace(nodes []*v1.Node, name string, mutate func(*v1.Node)) []*v1.Node {
	out := make([]*v1.Node, len(nodes))
	for i, n := range nodes {
		out[i] = n.DeepCopy()
		if n.Name == name {
			mutate(out[i])
		}
	}
	return out
}

// Every node computes the same owner from the same candidates, whatever
// order it lists them in: there is no coordination to fall back on.
func TestDecideIsOrderIndependentAndAgreed(t *testing.T) {
	names := []string{"a", "b", "c", "d", "e"}
	for i := range 200 {
		k := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}).String()
		var first string
		for rot := range names {
			var cands []Candidate
			for j := range names {
				cands = append(cands, Candidate{Node: names[(j+rot)%len(names)]})
			}
			for _, self := range names {
				d := Decide(self, k, cands)
				if first == "" {
					first = d.Owner
				}
				if d.Owner != first {
					t.Fatalf("key %s: node %s with rotation %d elects %s, another elected %s", k, self, rot, d.Owner, first)
				}
				if d.Announce != (self == first) {
					t.Fatalf("key %s: node %s Announce=%v, owner %s", k, self, d.Announce, first)
				}
			}
		}
	}
}

// Keys spread over the nodes, and removing a node moves only the keys it
// owned (what a rendezvous hash promises, and what keeps failover local).
func TestDecideSpreadsAndMovesOnlyTheLostKeys(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4"}
	const keys = 4000
	count := map[string]int{}
	before := map[string]string{}
	for i := range keys {
		k := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}).String()
		var cands []Candidate
		for _, n := range nodes {
			cands = append(cands, Candidate{Node: n})
		}
		owner := Decide("n1", k, cands).Owner
		count[owner]++
		before[k] = owner
	}
	for _, n := range nodes {
		// Each node's share is binomial(4000, 1/4): mean 1000, sd ~27; 150
		// is over 5 sd, so this fails only if the spread is really skewed.
		if c := count[n]; c < keys/4-150 || c > keys/4+150 {
			t.Errorf("node %s owns %d of %d keys, want about %d", n, c, keys, keys/4)
		}
	}
	moved := 0
	for k, owner := range before {
		cands := []Candidate{{Node: "n1"}, {Node: "n2"}, {Node: "n3"}, {Node: "n4", Ineligible: ReasonAgentNotAlive}}
		after := Decide("n1", k, cands).Owner
		if owner != "n4" && after != owner {
			t.Fatalf("key %s moved from %s to %s although only n4 left", k, owner, after)
		}
		if owner == "n4" {
			moved++
		}
	}
	if moved != count["n4"] {
		t.Errorf("%d keys moved, want n4's %d", moved, count["n4"])
	}
}

func TestKey(t *testing.T) {
	a := netip.MustParseAddr
	for _, tt := range []struct {
		addrs []netip.Addr
		want  string
	}{
		{nil, ""},
		{[]netip.Addr{a("192.0.2.7")}, "192.0.2.7"},
		{[]netip.Addr{a("2001:db8::1"), a("192.0.2.7")}, "192.0.2.7"},
		{[]netip.Addr{a("192.0.2.9"), a("192.0.2.10")}, "192.0.2.9"},
	} {
		if got := Key(tt.addrs); got != tt.want {
			t.Errorf("Key(%v) = %q, want %q", tt.addrs, got, tt.want)
		}
	}
}

func ExampleDecide() {
	cands := []Candidate{{Node: "n1"}, {Node: "n2", Ineligible: ReasonCordoned}, {Node: "n3"}}
	for _, self := range []string{"n1", "n2", "n3"} {
		d := Decide(self, "192.0.2.200", cands)
		fmt.Println(self, d.Announce, d.Reason)
	}
	// Output:
	// n1 true Owner
	// n2 false Cordoned
	// n3 false NotOwner
}

// BGP asks for the candidates without the membership: every node the
// Kubernetes state and the endpoints allow, whatever its agent's liveness.
func TestCandidatesIgnoringMembers(t *testing.T) {
	nodes := []*v1.Node{node("n1"), node("n2", cordoned), node("n3"), node("n4")}
	got := Candidates(CandidateInput{Nodes: nodes, Selected: everyNode, IgnoreMembers: true,
		Members:        map[string]Member{"n3": {State: MemberDead}, "n4": {State: MemberAlive, Draining: true}},
		LocalEndpoints: map[string]bool{"n1": true, "n2": true, "n3": true}})
	want := []Candidate{{Node: "n1"}, {Node: "n2", Ineligible: ReasonCordoned}, {Node: "n3"}, {Node: "n4", Ineligible: ReasonNoLocalEndpoints}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Candidates = %v, want %v", got, want)
	}
}
