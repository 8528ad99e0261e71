package speaker

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/bgp"
	"github.com/heraldlb/herald/bare-metal/election"
)

// Errors of a BGPPeer's password Secret, as the secret cache reports them.
var (
	ErrSecretNotFound   = errors.New("secret not found")
	ErrSecretKeyMissing = errors.New("secret has no such key")
	ErrSecretForbidden  = errors.New("herald-agent may not read the secret")
)

// bgpInput is what the BGP decision needs besides the cluster's objects:
// the password Secrets (from the secret cache) and this node's addresses.
type bgpInput struct {
	password func(name, key string) (string, error)
	host     Host
}

// objectCondition is the Valid condition of a BGPPeer or BGPAdvertisement.
type objectCondition struct {
	valid   bool
	reason  string
	message string
}

// bgpOutcome is one BGP decision round's result for this node.
type bgpOutcome struct {
	// peers are the sessions this node opens.
	peers []bgp.PeerConfig
	// desired are the paths it advertises.
	desired bgp.Table
	// notConfigured are the peers that select this node but that it
	// cannot open, with why (for its status entry).
	notConfigured map[string]string
	// peerValid and adValid are every object's Valid condition.
	peerValid, adValid map[string]objectCondition
	// services are the Services BGP covers, with who advertises them.
	services []bgpService
}

// bgpService is a Service covered by a BGPAdvertisement.
type bgpService struct {
	svc        *v1.Service
	addrs      []netip.Addr
	candidates []election.Candidate
	peers      []string
	// reporter writes the Service's BGPAdvertised condition: every agent
	// computes the same one.
	reporter string
}

type compiledPeer struct {
	cfg   bgp.PeerConfig
	nodes []labels.Selector
	// source is the spec's sourceAddress, if any: only the node holding it
	// opens the session.
	source netip.Addr
}

func (p compiledPeer) selects(n *v1.Node) bool { return election.SelectsNode(p.nodes, n.Labels) }

// decideBGP works out this node's sessions and paths. It does no I/O but
// through in.
func decideBGP(w world, in bgpInput) bgpOutcome {
	out := bgpOutcome{desired: bgp.Table{}, notConfigured: map[string]string{},
		peerValid: map[string]objectCondition{}, adValid: map[string]objectCondition{}}
	peers := compilePeers(w.bgpPeers, in, out.peerValid)
	ads := compileBGPAds(w.bgpAds, out.adValid)
	self := selfNode(w)
	for _, name := range sortedNames(peers) {
		p := peers[name]
		if self == nil || !p.selects(self) {
			continue
		}
		if p.source.IsValid() && !in.host.HasAddress(p.source) {
			continue // another node's session
		}
		out.peers = append(out.peers, p.cfg)
	}
	for name, c := range out.peerValid {
		if !c.valid && self != nil && peerSelectsByLabels(w.bgpPeers, name, self) {
			out.notConfigured[name] = c.message
		}
	}
	poolObjects := map[string]*v1alpha1.IPAddressPool{}
	for _, p := range w.pools {
		poolObjects[p.Name] = p
	}
	for _, svc := range w.services {
		if !handled(svc, w.classOnly) {
			continue
		}
		addrs := ingressAddrs(svc)
		pool := poolOf(svc, addrs, w.pools)
		if len(addrs) == 0 || pool == "" {
			continue
		}
		if s, ok := out.advertise(w, in, self, svc, addrs, coveringBGPAds(ads, pool, poolObjects[pool]), peers); ok {
			out.services = append(out.services, s)
		}
	}
	return out
}

// advertise adds svc's paths to out for every advertisement covering its
// pool, and returns who advertises it.
func (out *bgpOutcome) advertise(w world, in bgpInput, self *v1.Node, svc *v1.Service, addrs []netip.Addr,
	covering []bgp.Advertisement, peers map[string]compiledPeer) (bgpService, bool) {
	if len(covering) == 0 {
		return bgpService{}, false
	}
	local := localEndpoints([]*v1.Service{svc}, w.endpointNodes)
	s := bgpService{svc: svc, addrs: addrs}
	eligible := map[string]election.Reason{}
	for _, ad := range covering {
		targets := adPeers(ad, peers)
		for _, t := range targets {
			s.peers = append(s.peers, t.cfg.Name)
		}
		cands := election.Candidates(election.CandidateInput{Nodes: w.nodes, IgnoreMembers: true, LocalEndpoints: local,
			Selected: func(n *v1.Node) bool {
				return election.SelectsNode(ad.NodeSelectors, n.Labels) && slices.ContainsFunc(targets, func(p compiledPeer) bool { return p.selects(n) })
			}})
		for _, c := range cands {
			// A node is eligible if any advertisement lets it advertise.
			if r, seen := eligible[c.Node]; !seen || r != "" {
				eligible[c.Node] = c.Ineligible
			}
			if self == nil || c.Node != self.Name || c.Ineligible != "" {
				continue
			}
			for _, p := range targets {
				if slices.ContainsFunc(out.peers, func(cfg bgp.PeerConfig) bool { return cfg.Name == p.cfg.Name }) {
					out.addPaths(in, p.cfg, ad, addrs)
				}
			}
		}
	}
	slices.Sort(s.peers)
	s.peers = slices.Compact(s.peers)
	for _, n := range w.nodes {
		s.candidates = append(s.candidates, election.Candidate{Node: n.Name, Ineligible: eligible[n.Name]})
	}
	s.reporter = bgpReporter(election.Key(addrs), s.candidates, w.nodes)
	return s, true
}

// addPaths adds the paths of addrs to peer under ad. An address of the
// other family than the session's needs this node's address of its family
// on the interface toward the peer as next hop; without one, that family
// is not advertised to the peer.
func (out *bgpOutcome) addPaths(in bgpInput, peer bgp.PeerConfig, ad bgp.Advertisement, addrs []netip.Addr) {
	for _, a := range addrs {
		attrs := ad.Attrs
		if a.Is4() != peer.Address.Is4() {
			nh, err := nextHopToward(in.host, peer.Address, a.Is4())
			if err != nil {
				out.notConfigured[peer.Name] = fmt.Sprintf("cannot advertise %s over the session: %v", a, err)
				continue
			}
			attrs.NextHop = nh
		}
		out.desired.Add(peer.Name, ad.Prefix(a), attrs)
	}
}

// ErrNoNextHop means the node has no address of a family on the interface
// toward a peer.
var ErrNoNextHop = errors.New("no address of that family on the interface toward the peer")

func nextHopToward(host Host, peer netip.Addr, ipv4 bool) (netip.Addr, error) {
	addrs, err := host.AddressesToward(peer)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		if a.Is4() == ipv4 && a.IsGlobalUnicast() {
			return a, nil
		}
	}
	return netip.Addr{}, ErrNoNextHop
}

// bgpReporter elects the node that writes a Service's BGPAdvertised
// condition: the winner among the advertising nodes, else among the nodes
// Kubernetes considers fit, so that the condition also says why nobody
// advertises.
func bgpReporter(key string, cands []election.Candidate, nodes []*v1.Node) string {
	if d := election.Decide("", key, cands); d.Owner != "" {
		return d.Owner
	}
	var fit []election.Candidate
	for _, n := range nodes {
		fit = append(fit, election.Candidate{Node: n.Name, Ineligible: election.NodeIneligible(n)})
	}
	return election.Decide("", key, fit).Owner
}

func adPeers(ad bgp.Advertisement, peers map[string]compiledPeer) []compiledPeer {
	var out []compiledPeer
	for _, name := range sortedNames(peers) {
		if len(ad.Peers) == 0 || slices.Contains(ad.Peers, name) {
			out = append(out, peers[name])
		}
	}
	return out
}

// compilePeers turns the valid BGPPeers into sessions and records every
// peer's Valid condition. A peer whose address another one (earlier by
// name) uses already is invalid: GoBGP keys sessions by address.
func compilePeers(objs []*v1alpha1.BGPPeer, in bgpInput, valid map[string]objectCondition) map[string]compiledPeer {
	sorted := slices.SortedFunc(slices.Values(objs), func(a, b *v1alpha1.BGPPeer) int { return strings.Compare(a.Name, b.Name) })
	out := map[string]compiledPeer{}
	byAddr := map[netip.Addr]string{}
	for _, obj := range sorted {
		invalid := func(reason, format string, args ...any) {
			valid[obj.Name] = objectCondition{reason: reason, message: fmt.Sprintf(format, args...)}
		}
		nodes, err := election.Selectors(obj.Spec.NodeSelectors)
		if err != nil {
			invalid(v1alpha1.ReasonInvalidSelector, "nodeSelectors: %v", err)
			continue
		}
		password := ""
		if name, key, ok := bgp.PasswordRef(obj.Spec); ok {
			if password, err = in.password(name, key); err != nil {
				invalid(secretReason(err), "password Secret %s, key %s: %v", name, key, err)
				continue
			}
		}
		cfg, err := bgp.PeerConfigFromSpec(obj.Name, obj.Spec, password)
		if err != nil {
			invalid("InvalidSpec", "%v", err)
			continue
		}
		if other, dup := byAddr[cfg.Address]; dup {
			invalid("DuplicateAddress", "BGPPeer %s has the same peerAddress %s; only one session per address", other, cfg.Address)
			continue
		}
		byAddr[cfg.Address] = obj.Name
		p := compiledPeer{cfg: cfg, nodes: nodes}
		p.source = cfg.SourceAddress
		out[obj.Name] = p
		valid[obj.Name] = objectCondition{valid: true, reason: v1alpha1.ReasonValid, message: "herald-agent uses this peer"}
	}
	return out
}

func secretReason(err error) string {
	switch {
	case errors.Is(err, ErrSecretNotFound):
		return v1alpha1.ReasonSecretNotFound
	case errors.Is(err, ErrSecretKeyMissing):
		return v1alpha1.ReasonSecretKeyMissing
	case errors.Is(err, ErrSecretForbidden):
		return v1alpha1.ReasonSecretForbidden
	}
	return "SecretUnreadable"
}

// peerSelectsByLabels reports whether the (possibly invalid) BGPPeer name
// selects node by its node selectors; an unparsable selector selects it,
// so that the node reports the problem in its status entry.
func peerSelectsByLabels(objs []*v1alpha1.BGPPeer, name string, node *v1.Node) bool {
	for _, obj := range objs {
		if obj.Name == name {
			sels, err := election.Selectors(obj.Spec.NodeSelectors)
			return err != nil || election.SelectsNode(sels, node.Labels)
		}
	}
	return false
}

func compileBGPAds(objs []*v1alpha1.BGPAdvertisement, valid map[string]objectCondition) []bgp.Advertisement {
	var out []bgp.Advertisement
	for _, obj := range objs {
		a, err := bgp.CompileAdvertisement(obj.Name, obj.Spec)
		if err != nil {
			valid[obj.Name] = objectCondition{reason: "InvalidSpec", message: err.Error()}
			continue
		}
		valid[obj.Name] = objectCondition{valid: true, reason: v1alpha1.ReasonValid, message: "herald-agent uses this advertisement"}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// coveringBGPAds are the advertisements of pool: naming it, selecting its
// IPAddressPool's labels, or naming and selecting nothing (every pool).
func coveringBGPAds(ads []bgp.Advertisement, pool string, obj *v1alpha1.IPAddressPool) []bgp.Advertisement {
	var out []bgp.Advertisement
	for _, a := range ads {
		if len(a.Pools) == 0 && len(a.PoolSelectors) == 0 || slices.Contains(a.Pools, pool) ||
			obj != nil && election.AnySelects(a.PoolSelectors, obj.Labels) {
			out = append(out, a)
		}
	}
	return out
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// bgpCondition is the BGPAdvertised condition of a covered Service.
func bgpCondition(s bgpService) *metav1.Condition {
	var advertising []string
	for _, c := range s.candidates {
		if c.Ineligible == "" {
			advertising = append(advertising, c.Node)
		}
	}
	slices.Sort(advertising)
	if len(advertising) == 0 {
		return &metav1.Condition{Type: ConditionBGPAdvertised, Status: metav1.ConditionFalse, Reason: string(election.ReasonNoCandidate),
			Message: "No node may advertise " + joinAddrs(s.addrs) + ": " + candidateSummary(s.candidates)}
	}
	if len(advertising) > maxListedNodes {
		advertising = append(advertising[:maxListedNodes], fmt.Sprintf("and %d more", len(advertising)-maxListedNodes))
	}
	peers := "no peer"
	if len(s.peers) > 0 {
		peers = "peers " + strings.Join(s.peers, ", ")
	}
	return &metav1.Condition{Type: ConditionBGPAdvertised, Status: metav1.ConditionTrue, Reason: ReasonBGP,
		Message: fmt.Sprintf("Advertised with BGP to %s from nodes %s: %s", peers, strings.Join(advertising, ", "), joinAddrs(s.addrs))}
}
