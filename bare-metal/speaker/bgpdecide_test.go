package speaker

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/election"
)

// fakeHost is a node with fixed addresses, all on the interface toward
// every peer.
type fakeHost struct{ addrs []netip.Addr }

func (h fakeHost) HasAddress(a netip.Addr) bool { return slices.Contains(h.addrs, a) }
func (h fakeHost) AddressesToward(netip.Addr) ([]netip.Addr, error) {
	return h.addrs, nil
}

var dualStackHost = fakeHost{addrs: []netip.Addr{netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("2001:db8::11"),
	netip.MustParseAddr("fe80::1")}}

func bgpPeer(name, addr string, mutate ...func(*v1alpha1.BGPPeerSpec)) *v1alpha1.BGPPeer {
	p := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.BGPPeerSpec{PeerAddress: addr, PeerASN: 64500, LocalASN: 64512}}
	for _, m := range mutate {
		m(&p.Spec)
	}
	return p
}

func bgpAd(name string, mutate ...func(*v1alpha1.BGPAdvertisementSpec)) *v1alpha1.BGPAdvertisement {
	a := &v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, m := range mutate {
		m(&a.Spec)
	}
	return a
}

func etpLocal(s *v1.Service) { s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal }

// endpointsOn gives every Service a ready endpoint on each of nodes.
func endpointsOn(nodes ...string) func(*v1.Service) []string {
	return func(*v1.Service) []string { return nodes }
}

func bgpWorld(mutate func(*world)) world {
	w := baseWorld()
	w.members = nil // BGP never reads the membership
	w.services = []*v1.Service{with(lbService("web", "198.51.100.200"), fromPool("lab"))}
	w.bgpPeers = []*v1alpha1.BGPPeer{bgpPeer("router", "192.0.2.1")}
	w.bgpAds = []*v1alpha1.BGPAdvertisement{bgpAd("lab", func(s *v1alpha1.BGPAdvertisementSpec) { s.IPAddressPools = []string{"lab"} })}
	if mutate != nil {
		mutate(&w)
	}
	return w
}

// summary renders an outcome's sessions, paths and per-node notes.
func summary(out bgpOutcome) string {
	var parts []string
	for _, p := range out.peers {
		parts = append(parts, "session "+p.Name)
	}
	for peer, paths := range out.desired {
		for prefix, attrs := range paths {
			parts = append(parts, fmt.Sprintf("path %s %s %s", peer, prefix, attrs))
		}
	}
	for peer, msg := range out.notConfigured {
		parts = append(parts, fmt.Sprintf("note %s: %s", peer, msg))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

func noSecrets(name, _ string) (string, error) {
	return "", fmt.Errorf("%w: %s", ErrSecretNotFound, name)
}

func TestDecideBGP(t *testing.T) {
	secrets := func(name, key string) (string, error) {
		if name == "md5" && key == "password" {
			return "s3cret", nil
		}
		return noSecrets(name, key)
	}
	tests := []struct {
		name   string
		mutate func(*world)
		want   string
	}{
		{name: "ETP Cluster: every eligible node advertises, this one too",
			want: "path router 198.51.100.200/32 {}; session router"},
		{name: "no advertisement: sessions, no paths",
			mutate: func(w *world) { w.bgpAds = nil }, want: "session router"},
		{name: "advertisement of another pool", want: "session router",
			mutate: func(w *world) { w.bgpAds[0].Spec.IPAddressPools = []string{"other"} }},
		{name: "Service gone: nothing to advertise", want: "session router", mutate: func(w *world) { w.services = nil }},
		{name: "not a LoadBalancer", want: "session router",
			mutate: func(w *world) { w.services[0].Spec.Type = v1.ServiceTypeNodePort }},
		{name: "another class", want: "session router",
			mutate: func(w *world) { w.services[0].Spec.LoadBalancerClass = ptr.To("example.com/lb") }},
		{name: "an address of no known pool", want: "session router",
			mutate: func(w *world) { w.services = []*v1.Service{lbService("web", "203.0.113.9")} }},
		{name: "no annotation: the IPAddressPool containing the address",
			mutate: func(w *world) {
				w.services = []*v1.Service{lbService("web", "198.51.100.200")}
				w.pools = []*v1alpha1.IPAddressPool{poolObject("lab", nil, "198.51.100.200-198.51.100.209")}
			}, want: "path router 198.51.100.200/32 {}; session router"},
		{name: "ETP Local without a local endpoint: no path here",
			mutate: func(w *world) { etpLocal(w.services[0]); w.endpointNodes = endpointsOn("n2") }, want: "session router"},
		{name: "ETP Local with a local endpoint",
			mutate: func(w *world) { etpLocal(w.services[0]); w.endpointNodes = endpointsOn("n1", "n3") },
			want:   "path router 198.51.100.200/32 {}; session router"},
		{name: "this node cordoned: the session stays, the paths go",
			mutate: func(w *world) { w.nodes = []*v1.Node{cordon(readyNode("n1", nil)), readyNode("n2", nil)} },
			want:   "session router"},
		{name: "this node excluded from load balancers",
			mutate: func(w *world) {
				w.nodes = []*v1.Node{readyNode("n1", map[string]string{v1.LabelNodeExcludeBalancers: ""}), readyNode("n2", nil)}
			}, want: "session router"},
		{name: "the peer's node selector leaves this node out: no session, no path",
			mutate: func(w *world) { w.bgpPeers[0].Spec.NodeSelectors = rackSelector("b") }, want: ""},
		{name: "the advertisement's node selector leaves this node out",
			mutate: func(w *world) { w.bgpAds[0].Spec.NodeSelectors = rackSelector("b") }, want: "session router"},
		{name: "the advertisement names one of two peers",
			mutate: func(w *world) {
				w.bgpPeers = append(w.bgpPeers, bgpPeer("backup", "192.0.2.2"))
				w.bgpAds[0].Spec.Peers = []string{"backup"}
			}, want: "path backup 198.51.100.200/32 {}; session backup; session router"},
		{name: "two advertisements of the pool: attributes merged",
			mutate: func(w *world) {
				w.bgpAds[0].Spec.Communities = []string{"64500:1"}
				w.bgpAds = append(w.bgpAds, bgpAd("more", func(s *v1alpha1.BGPAdvertisementSpec) {
					s.IPAddressPools, s.Communities, s.LocalPref = []string{"lab"}, []string{"64500:2"}, ptr.To[int64](200)
				}))
			}, want: "path router 198.51.100.200/32 {communities=64500:1,64500:2 local-pref=200}; session router"},
		{name: "aggregation", want: "path router 198.51.100.0/24 {}; session router",
			mutate: func(w *world) { w.bgpAds[0].Spec.AggregationLength = ptr.To[int32](24) }},
		{name: "dual-stack Service over an IPv4 session: the IPv6 path gets the node's IPv6 address as next hop",
			mutate: func(w *world) {
				w.services = []*v1.Service{with(lbService("web", "198.51.100.200", "2001:db8:f::200"), fromPool("lab"))}
			},
			want: "path router 198.51.100.200/32 {}; path router 2001:db8:f::200/128 {next-hop=2001:db8::11}; session router"},
		{name: "an IPv6 session needs no next hop for IPv6 paths",
			mutate: func(w *world) {
				w.bgpPeers[0].Spec.PeerAddress = "2001:db8::1"
				w.services = []*v1.Service{with(lbService("web", "2001:db8:f::200"), fromPool("lab"))}
			}, want: "path router 2001:db8:f::200/128 {}; session router"},
		{name: "the password from its Secret",
			mutate: func(w *world) { w.bgpPeers[0].Spec.PasswordSecret = &v1alpha1.SecretKeySelector{Name: "md5"} },
			want:   "path router 198.51.100.200/32 {}; session router"},
		{name: "the password Secret is missing: no session, a note in this node's entry",
			mutate: func(w *world) { w.bgpPeers[0].Spec.PasswordSecret = &v1alpha1.SecretKeySelector{Name: "gone"} },
			want:   "note router: password Secret gone, key password: secret not found: gone"},
		{name: "a source address another node holds: that node's session",
			mutate: func(w *world) { w.bgpPeers[0].Spec.SourceAddress = "192.0.2.12" }, want: ""},
		{name: "a source address this node holds",
			mutate: func(w *world) { w.bgpPeers[0].Spec.SourceAddress = "192.0.2.11" },
			want:   "path router 198.51.100.200/32 {}; session router"},
		{name: "two peers with one address: the second by name is refused",
			mutate: func(w *world) { w.bgpPeers = append(w.bgpPeers, bgpPeer("again", "192.0.2.1")) },
			want:   "note router: BGPPeer again has the same peerAddress 192.0.2.1; only one session per address; path again 198.51.100.200/32 {}; session again"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := decideBGP(bgpWorld(tt.mutate), bgpInput{password: secrets, host: dualStackHost})
			if got := summary(out); got != tt.want {
				t.Errorf("decideBGP:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func cordon(n *v1.Node) *v1.Node { n.Spec.Unschedulable = true; return n }

func rackSelector(rack string) []metav1.LabelSelector {
	return []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": rack}}}
}

// The validity of every BGPPeer and BGPAdvertisement, which one reporter
// writes as their Valid condition.
func TestDecideBGPValidity(t *testing.T) {
	badSelector := []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "rack", Operator: "Near"}}}}
	w := bgpWorld(func(w *world) {
		w.bgpPeers = []*v1alpha1.BGPPeer{
			bgpPeer("ok", "192.0.2.1"),
			bgpPeer("bad-selector", "192.0.2.2", func(s *v1alpha1.BGPPeerSpec) { s.NodeSelectors = badSelector }),
			bgpPeer("no-secret", "192.0.2.3", func(s *v1alpha1.BGPPeerSpec) { s.PasswordSecret = &v1alpha1.SecretKeySelector{Name: "x"} }),
			bgpPeer("bad-spec", "192.0.2.4", func(s *v1alpha1.BGPPeerSpec) { s.PeerASN = 0 }),
		}
		w.bgpAds = []*v1alpha1.BGPAdvertisement{
			bgpAd("ok"),
			bgpAd("bad-selector", func(s *v1alpha1.BGPAdvertisementSpec) { s.NodeSelectors = badSelector }),
		}
	})
	out := decideBGP(w, bgpInput{password: noSecrets, host: dualStackHost})
	render := func(m map[string]objectCondition) string {
		var parts []string
		for name, c := range m {
			parts = append(parts, fmt.Sprintf("%s=%v/%s", name, c.valid, c.reason))
		}
		slices.Sort(parts)
		return strings.Join(parts, " ")
	}
	if got, want := render(out.peerValid), "bad-selector=false/InvalidSelector bad-spec=false/InvalidSpec no-secret=false/SecretNotFound ok=true/Valid"; got != want {
		t.Errorf("peers: %s\nwant   %s", got, want)
	}
	if got, want := render(out.adValid), "bad-selector=false/InvalidSpec ok=true/Valid"; got != want {
		t.Errorf("advertisements: %s\nwant            %s", got, want)
	}
	if got := summary(out); !strings.Contains(got, "session ok") || strings.Contains(got, "session bad") {
		t.Errorf("only the valid peer may open a session: %s", got)
	}
}

func TestBGPConditionNamesTheAdvertisingNodes(t *testing.T) {
	w := bgpWorld(func(w *world) {
		etpLocal(w.services[0])
		w.endpointNodes = endpointsOn("n1", "n3")
	})
	out := decideBGP(w, bgpInput{password: noSecrets, host: dualStackHost})
	if len(out.services) != 1 {
		t.Fatalf("services %v", out.services)
	}
	c := bgpCondition(out.services[0])
	want := "Advertised with BGP to peers router from nodes n1, n3: 198.51.100.200"
	if c.Status != metav1.ConditionTrue || c.Reason != ReasonBGP || c.Message != want {
		t.Errorf("condition %s %s %q, want True BGP %q", c.Status, c.Reason, c.Message, want)
	}
	if r := out.services[0].reporter; r != "n1" && r != "n3" {
		t.Errorf("reporter %s is not an advertising node", r)
	}

	w.endpointNodes = endpointsOn()
	out = decideBGP(w, bgpInput{password: noSecrets, host: dualStackHost})
	c = bgpCondition(out.services[0])
	want = "No node may advertise 198.51.100.200: n1 NoLocalEndpoints, n2 NoLocalEndpoints, n3 NoLocalEndpoints"
	if c.Status != metav1.ConditionFalse || c.Message != want {
		t.Errorf("condition %s %q, want False %q", c.Status, c.Message, want)
	}
	if out.services[0].reporter == "" {
		t.Error("nobody reports why nobody advertises")
	}
}

func TestReporterRank(t *testing.T) {
	nodes := []*v1.Node{readyNode("n1", nil), readyNode("n2", nil), readyNode("n3", nil), readyNode("n4", nil), cordon(readyNode("n5", nil))}
	ranks := map[int]int{}
	for _, n := range nodes {
		r := reporterRank(n.Name, "BGPPeer/router", nodes)
		if n.Name == "n5" && r != -1 {
			t.Errorf("the cordoned node ranks %d", r)
		}
		ranks[r]++
	}
	if ranks[0] != 1 || ranks[1] != 1 || ranks[2] != 1 || ranks[-1] != 2 {
		t.Errorf("ranks %v, want one each of 0, 1, 2 and the rest out (-1)", ranks)
	}
	var fit []election.Candidate
	for _, n := range nodes[:4] {
		fit = append(fit, election.Candidate{Node: n.Name})
	}
	if first := election.Decide("", "BGPPeer/router", fit).Owner; reporterRank(first, "BGPPeer/router", nodes) != 0 {
		t.Errorf("the rendezvous winner %s is not ranked first", first)
	}
}
