package speaker

import (
	"net/netip"
	"slices"
	"sort"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/election"
	"github.com/heraldlb/herald/bare-metal/ipam"
	"github.com/heraldlb/herald/provider/service"
)

// world is everything one decision round looks at, as this node sees it.
type world struct {
	self string
	// classOnly: Services without a loadBalancerClass belong to another
	// implementation (herald-ccm's --load-balancer-class-only).
	classOnly bool
	services  []*v1.Service
	// endpointNodes lists the nodes with a ready endpoint of a Service.
	endpointNodes func(svc *v1.Service) []string
	nodes         []*v1.Node
	pools         []*v1alpha1.IPAddressPool
	ads           []*v1alpha1.L2Advertisement
	members       map[string]election.Member
	// BGP's objects.
	bgpPeers []*v1alpha1.BGPPeer
	bgpAds   []*v1alpha1.BGPAdvertisement
}

// group is what is announced as one unit: the addresses of the Services
// that share an election key.
type group struct {
	key      string
	addrs    []netip.Addr
	services []*v1.Service
	pool     string
	// ads are the advertisements that cover the pool.
	ads        []compiledAd
	candidates []election.Candidate
	decision   election.Decision
	// reporter is the alive agent that writes the Service condition when
	// no node may announce: someone must say why, and only one should.
	reporter string
}

// outcome is one decision round's result.
type outcome struct {
	groups []*group // by key
	// owners is every address with its owner ("" when none), for the planner.
	owners map[netip.Addr]string
	// expected are the nodes that should run an announcing agent: selected
	// by an advertisement and fit by their Kubernetes state. The fence's
	// quorum counts them.
	expected []string
	// invalid lists advertisements with a selector that does not parse.
	invalid []string
}

// decide works out, for every Service address covered by an
// L2Advertisement, who announces it. It does no I/O.
func decide(w world) outcome {
	ads, invalid := compileAds(w.ads)
	out := outcome{owners: map[netip.Addr]string{}, invalid: invalid}
	poolObjects := map[string]*v1alpha1.IPAddressPool{}
	for _, p := range w.pools {
		poolObjects[p.Name] = p
	}
	byKey := map[string]*group{}
	for _, svc := range w.services {
		if !handled(svc, w.classOnly) {
			continue
		}
		addrs := ingressAddrs(svc)
		pool := poolOf(svc, addrs, w.pools)
		covering := coveringAds(ads, pool, poolObjects[pool])
		if len(addrs) == 0 || len(covering) == 0 {
			continue
		}
		key := election.Key(addrs)
		g := byKey[key]
		if g == nil {
			g = &group{key: key, pool: pool, ads: covering}
			byKey[key] = g
		}
		g.services = append(g.services, svc)
		for _, a := range addrs {
			if !slices.Contains(g.addrs, a) {
				g.addrs = append(g.addrs, a)
			}
		}
	}
	for _, g := range byKey {
		g.candidates = election.Candidates(election.CandidateInput{
			Nodes:          w.nodes,
			Selected:       func(n *v1.Node) bool { return selectsNode(g.ads, n) },
			Members:        w.members,
			LocalEndpoints: localEndpoints(g.services, w.endpointNodes),
		})
		g.decision = election.Decide(w.self, g.key, g.candidates)
		g.reporter = reporter(g.key, w.members)
		slices.SortFunc(g.addrs, netip.Addr.Compare)
		for _, a := range g.addrs {
			out.owners[a] = g.decision.Owner
		}
		out.groups = append(out.groups, g)
	}
	sort.Slice(out.groups, func(i, j int) bool { return out.groups[i].key < out.groups[j].key })
	for _, n := range w.nodes {
		if selectsNode(ads, n) && election.NodeIneligible(n) == "" && w.members[n.Name].State != election.MemberLeft {
			out.expected = append(out.expected, n.Name)
		}
	}
	return out
}

// handled reports whether herald announces svc's addresses: a
// LoadBalancer of herald's class, or of none unless classOnly.
func handled(svc *v1.Service, classOnly bool) bool {
	if svc.Spec.Type != v1.ServiceTypeLoadBalancer {
		return false
	}
	if c := svc.Spec.LoadBalancerClass; c != nil {
		return *c == service.Class
	}
	return !classOnly
}

func ingressAddrs(svc *v1.Service) []netip.Addr {
	var out []netip.Addr
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(ing.IP); err == nil && !slices.Contains(out, a.Unmap()) {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// poolOf is the pool svc's addresses came from: as herald-ccm recorded it,
// else the IPAddressPool containing the first of them; "" if unknown, and
// then nothing is announced: the addresses may not be herald's at all.
func poolOf(svc *v1.Service, addrs []netip.Addr, pools []*v1alpha1.IPAddressPool) string {
	if name := svc.Annotations[v1alpha1.AnnotationAllocatedFromPool]; name != "" {
		return name
	}
	if len(addrs) == 0 {
		return ""
	}
	for _, p := range pools {
		for _, s := range p.Spec.Addresses {
			if r, err := ipam.ParseRange(s); err == nil && r.Contains(addrs[0]) {
				return p.Name
			}
		}
	}
	return ""
}

// compiledAd is an L2Advertisement with its selectors parsed.
type compiledAd struct {
	obj   *v1alpha1.L2Advertisement
	pools []labels.Selector
	nodes []labels.Selector
}

// compileAds parses the advertisements' selectors. One with a selector
// that does not parse is left out as a whole, and named in invalid: a
// broken selector must not widen what is announced.
func compileAds(objs []*v1alpha1.L2Advertisement) (ads []compiledAd, invalid []string) {
	for _, obj := range objs {
		pools, errP := election.Selectors(obj.Spec.IPAddressPoolSelectors)
		nodes, errN := election.Selectors(obj.Spec.NodeSelectors)
		if errP != nil || errN != nil {
			invalid = append(invalid, obj.Name)
			continue
		}
		ads = append(ads, compiledAd{obj: obj, pools: pools, nodes: nodes})
	}
	return ads, invalid
}

// coveringAds are the advertisements that announce pool: those naming
// it, those whose pool selectors match it, and those that name and select
// nothing (every pool, as in MetalLB).
func coveringAds(ads []compiledAd, pool string, obj *v1alpha1.IPAddressPool) []compiledAd {
	if pool == "" {
		return nil
	}
	var out []compiledAd
	for _, a := range ads {
		spec := a.obj.Spec
		matches := len(spec.IPAddressPools) == 0 && len(spec.IPAddressPoolSelectors) == 0 ||
			slices.Contains(spec.IPAddressPools, pool) ||
			obj != nil && election.AnySelects(a.pools, obj.Labels)
		if matches {
			out = append(out, a)
		}
	}
	return out
}

func selectsNode(ads []compiledAd, n *v1.Node) bool {
	for _, a := range ads {
		if len(a.nodes) == 0 || election.AnySelects(a.nodes, n.Labels) {
			return true
		}
	}
	return false
}

// localEndpoints is, for Services with externalTrafficPolicy Local, the
// nodes with a ready endpoint of any of them; nil for Cluster.
func localEndpoints(svcs []*v1.Service, endpointNodes func(*v1.Service) []string) map[string]bool {
	var out map[string]bool
	for _, svc := range svcs {
		if svc.Spec.ExternalTrafficPolicy != v1.ServiceExternalTrafficPolicyLocal {
			continue
		}
		if out == nil {
			out = map[string]bool{}
		}
		for _, n := range endpointNodes(svc) {
			out[n] = true
		}
	}
	return out
}

// reporter elects, among the alive agents, the one that speaks for a key
// nobody may announce, so that exactly one writes why.
func reporter(key string, members map[string]election.Member) string {
	var cands []election.Candidate
	for name, m := range members {
		if m.Alive() {
			cands = append(cands, election.Candidate{Node: name})
		}
	}
	return election.Decide("", key, cands).Owner
}
