package speaker

import (
	"net/netip"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/election"
	"github.com/heraldlb/herald/provider/service"
)

func lbService(name string, ips ...string) *v1.Service {
	svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: name, Annotations: map[string]string{}},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: v1.ServiceExternalTrafficPolicyCluster}}
	for _, ip := range ips {
		svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
	}
	return svc
}

func fromPool(pool string) func(*v1.Service) {
	return func(s *v1.Service) { s.Annotations[v1alpha1.AnnotationAllocatedFromPool] = pool }
}

func with(svc *v1.Service, mutate ...func(*v1.Service)) *v1.Service {
	for _, m := range mutate {
		m(svc)
	}
	return svc
}

func readyNode(name string, labels map[string]string) *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status: v1.NodeStatus{Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue}}}}
}

func ad(name string, mutate ...func(*v1alpha1.L2AdvertisementSpec)) *v1alpha1.L2Advertisement {
	a := &v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, m := range mutate {
		m(&a.Spec)
	}
	return a
}

func pools(names ...string) func(*v1alpha1.L2AdvertisementSpec) {
	return func(s *v1alpha1.L2AdvertisementSpec) { s.IPAddressPools = names }
}

func nodeSel(k, v string) func(*v1alpha1.L2AdvertisementSpec) {
	return func(s *v1alpha1.L2AdvertisementSpec) {
		s.NodeSelectors = append(s.NodeSelectors, metav1.LabelSelector{MatchLabels: map[string]string{k: v}})
	}
}

func poolSel(k, v string) func(*v1alpha1.L2AdvertisementSpec) {
	return func(s *v1alpha1.L2AdvertisementSpec) {
		s.IPAddressPoolSelectors = append(s.IPAddressPoolSelectors, metav1.LabelSelector{MatchLabels: map[string]string{k: v}})
	}
}

func poolObject(name string, labels map[string]string, addrs ...string) *v1alpha1.IPAddressPool {
	return &v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: v1alpha1.IPAddressPoolSpec{Addresses: addrs}}
}

var threeNodes = []*v1.Node{
	readyNode("n1", map[string]string{"rack": "a"}),
	readyNode("n2", map[string]string{"rack": "a"}),
	readyNode("n3", map[string]string{"rack": "b"}),
}

func baseWorld() world {
	return world{
		self:          "n1",
		nodes:         threeNodes,
		members:       map[string]election.Member{"n1": {State: election.MemberAlive}, "n2": {State: election.MemberAlive}, "n3": {State: election.MemberAlive}},
		endpointNodes: func(*v1.Service) []string { return nil },
	}
}

// groupsOf summarises an outcome: key -> eligible candidates.
func groupsOf(out outcome) map[string][]string {
	m := map[string][]string{}
	for _, g := range out.groups {
		var eligible []string
		for _, c := range g.candidates {
			if c.Ineligible == "" {
				eligible = append(eligible, c.Node)
			}
		}
		m[g.key] = eligible
	}
	return m
}

func TestDecideWhatIsAnnounced(t *testing.T) {
	all := []string{"n1", "n2", "n3"}
	tests := []struct {
		name    string
		mutate  func(*world)
		want    map[string][]string
		invalid []string
	}{
		{name: "no advertisement: nothing is announced by Layer 2", want: map[string][]string{},
			mutate: func(w *world) { w.services = []*v1.Service{with(lbService("a", "192.0.2.10"), fromPool("p"))} }},
		{name: "advertisement naming the pool", want: map[string][]string{"192.0.2.10": all},
			mutate: func(w *world) {
				w.services = []*v1.Service{with(lbService("a", "192.0.2.10"), fromPool("p"))}
				w.ads = []*v1alpha1.L2Advertisement{ad("x", pools("p"))}
			}},
		{name: "advertisement naming another pool", want: map[string][]string{},
			mutate: func(w *world) {
				w.services = []*v1.Service{with(lbService("a", "192.0.2.10"), fromPool("p"))}
				w.ads = []*v1alpha1.L2Advertisement{ad("x", pools("q"))}
			}},
		{name: "advertisement with neither names nor selectors covers every pool", want: map[string][]string{"192.0.2.10": all},
			mutate: func(w *world) {
				w.services = []*v1.Service{with(lbService("a", "192.0.2.10"), fromPool("p"))}
				w.ads = []*v1alpha1.L2Advertisement{ad("x")}
			}},
		{name: "pool selector matches the IPAddressPool's labels", want: map[string][]string{"192.0.2.10": all},
			mutate: func(w *world) {
				w.services = []*v1.Service{with(lbService("a", "192.0.2.10"), fromPool("p"))}
				w.pools = []*v1alpha1.IPAddressPool{poolObject("p", map[string]string{"tier": "front"}, "192.0.2.0/24")}
				w.ads = []*v1alpha1.L2Advertisement{ad("x", poolSel("tier", "front"))}
			}},
		{name: "pool selector does not match a config pool (no labels)", want: map[string][]string{},
			mutate: func(w *world) {
				w.services = []*v1.Service{with(lbService("a", "192.0.2.10"), fromPool("config-pool"))}
				w.ads = []*v1alpha1.L2Advertisement{ad("x", poolSel("tier", "front"))}
			}},
		{name: "no annotation: the pool is the IPAddressPool containing the address", want: map[string][]string{"192.0.2.10": all},
			mutate: func(w *world) {
				w.services = []*v1.Service{lbService("a", "192.0.2.10")}
				w.pools = []*v1alpha1.IPAddressPool{poolObject("p", nil, "192.0.2.0/28")}
				w.ads = []*v1alpha1.L2Advertisement{ad("x", pools("p"))}
			}},
		{name: "an address in no known pool is not herald's: not announced", want: map[string][]string{},
			mutate: func(w *world) {
				w.services = []*v1.Service{lbService("a", "203.0.113.9")}
				w.pools = []*v1alpha1.IPAddressPool{poolObject("p", nil, "192.0.2.0/28")}
				w.ads = []*v1alpha1.L2Advertisement{ad("x")}
			}},
		{name: "node selectors limit the candidates", want: map[string][]string{"192.0.2.10": {"n3"}},
			mutate: func(w *world) {
				w.services = []*v1.Service{with(lbService("a", "192.0.2.10"), fromPool("p"))}
				w.ads = []*v1alpha1.L2Advertisement{ad("x", pools("p"), nodeSel("rack", "b"))}
			}},
		{name: "two advertisements for one pool: the union of their nodes", want: map[string][]string{"192.0.2.10": all},
			mutate: func(w *world) {
				w.services = []*v1.Service{with(lbService("a", "192.0.2.10"), fromPool("p"))}
				w.ads = []*v1alpha1.L2Advertisement{ad("x", pools("p"), nodeSel("rack", "b")), ad("y", pools("p"), nodeSel("rack", "a"))}
			}},
		{name: "invalid selector: the advertisement is ignored, not widened", want: map[string][]string{}, invalid: []string{"bad"},
			mutate: func(w *world) {
				w.services = []*v1.Service{with(lbService("a", "192.0.2.10"), fromPool("p"))}
				w.ads = []*v1alpha1.L2Advertisement{ad("bad", pools("p"), func(s *v1alpha1.L2AdvertisementSpec) {
					s.NodeSelectors = []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "rack", Operator: "Near"}}}}
				})}
			}},
		{name: "other classes are not herald's", want: map[string][]string{},
			mutate: func(w *world) {
				w.services = []*v1.Service{with(lbService("a", "192.0.2.10"), fromPool("p"), func(s *v1.Service) { s.Spec.LoadBalancerClass = ptr.To("example.com/lb") })}
				w.ads = []*v1alpha1.L2Advertisement{ad("x")}
			}},
		{name: "herald's class is herald's, also with class-only", want: map[string][]string{"192.0.2.10": all},
			mutate: func(w *world) {
				w.classOnly = true
				w.services = []*v1.Service{with(lbService("a", "192.0.2.10"), fromPool("p"), func(s *v1.Service) { s.Spec.LoadBalancerClass = ptr.To(service.Class) })}
				w.ads = []*v1alpha1.L2Advertisement{ad("x")}
			}},
		{name: "class-only leaves Services without a class alone", want: map[string][]string{},
			mutate: func(w *world) {
				w.classOnly = true
				w.services = []*v1.Service{with(lbService("a", "192.0.2.10"), fromPool("p"))}
				w.ads = []*v1alpha1.L2Advertisement{ad("x")}
			}},
		{name: "not a LoadBalancer any more", want: map[string][]string{},
			mutate: func(w *world) {
				w.services = []*v1.Service{with(lbService("a", "192.0.2.10"), fromPool("p"), func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeClusterIP })}
				w.ads = []*v1alpha1.L2Advertisement{ad("x")}
			}},
		{name: "ETP Local: only nodes with a ready endpoint", want: map[string][]string{"192.0.2.10": {"n2"}},
			mutate: func(w *world) {
				w.services = []*v1.Service{with(lbService("a", "192.0.2.10"), fromPool("p"), func(s *v1.Service) {
					s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
				})}
				w.ads = []*v1alpha1.L2Advertisement{ad("x")}
				w.endpointNodes = func(*v1.Service) []string { return []string{"n2"} }
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := baseWorld()
			tt.mutate(&w)
			out := decide(w)
			got := groupsOf(out)
			if len(got) != len(tt.want) {
				t.Fatalf("groups %v, want %v", got, tt.want)
			}
			for k, want := range tt.want {
				if !slices.Equal(got[k], want) {
					t.Errorf("group %s: candidates %v, want %v", k, got[k], want)
				}
			}
			if !slices.Equal(out.invalid, tt.invalid) {
				t.Errorf("invalid = %v, want %v", out.invalid, tt.invalid)
			}
		})
	}
}

// A dual-stack Service is one group, and so are Services sharing an
// address: one owner for all of them.
func TestDecideGroupsAddressesAnnouncedTogether(t *testing.T) {
	w := baseWorld()
	w.ads = []*v1alpha1.L2Advertisement{ad("x")}
	w.services = []*v1.Service{
		with(lbService("dual", "2001:db8::10", "192.0.2.10"), fromPool("p")),
		with(lbService("shares-v4", "192.0.2.10"), fromPool("p")),
		with(lbService("alone", "192.0.2.11"), fromPool("p")),
	}
	out := decide(w)
	if len(out.groups) != 2 {
		t.Fatalf("%d groups, want 2", len(out.groups))
	}
	g := out.groups[0]
	if g.key != "192.0.2.10" || len(g.services) != 2 ||
		!slices.Equal(g.addrs, []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")}) {
		t.Fatalf("group = key %s, %d services, addrs %v", g.key, len(g.services), g.addrs)
	}
	for _, a := range g.addrs {
		if out.owners[a] != g.decision.Owner || g.decision.Owner == "" {
			t.Errorf("owner of %s = %q, group owner %q", a, out.owners[a], g.decision.Owner)
		}
	}
}

func TestDecideExpectedNodes(t *testing.T) {
	w := baseWorld()
	w.ads = []*v1alpha1.L2Advertisement{ad("x", nodeSel("rack", "a"))}
	w.nodes = append(slices.Clone(threeNodes), readyNode("n4", map[string]string{"rack": "a"}), readyNode("n5", map[string]string{"rack": "a"}))
	w.nodes[1] = w.nodes[1].DeepCopy()
	w.nodes[1].Spec.Unschedulable = true
	w.members["n4"] = election.Member{State: election.MemberLeft}
	w.members["n5"] = election.Member{State: election.MemberDead}
	// n2 cordoned and n4's agent gone on purpose are not expected; n5's
	// dead agent still is (that is what quorum is about); n3 is not
	// selected.
	if got := decide(w).expected; !slices.Equal(got, []string{"n1", "n5"}) {
		t.Fatalf("expected = %v, want [n1 n5]", got)
	}
}
