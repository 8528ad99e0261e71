package dataplane

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

const defaultAffinitySeconds int32 = 10800

// PrecreatedPickChains is how many endpoint counts have a pick chain whether
// or not a Service uses them. A count beyond them adds a chain the first
// time a Service reaches it: a partial sync over netlink, but a full sync
// where only nft writes (see doc.go), which an autoscaled Deployment would
// otherwise pay at every step. 64 covers most Services for a small cost in
// every sync that writes the skeleton (docs/benchmarks.md).
const PrecreatedPickChains = 64

// frontend is one address (or, for a NodePort, every node address) plus
// protocol and port that a client may send service traffic to.
type frontend struct {
	nodePort bool
	addr     netip.Addr // unset for a NodePort
	proto    string
	port     int32
	external bool // subject to externalTrafficPolicy
	lb       bool // subject to loadBalancerSourceRanges
}

func (fe frontend) key() []string {
	port := strconv.Itoa(int(fe.port))
	if fe.nodePort {
		return []string{fe.proto, port}
	}
	return []string{fe.addr.String(), fe.proto, port}
}

// Build computes the desired herald table from Services, their EndpointSlices
// and the node the agent runs on. It is pure: same input, same Ruleset.
// Services of type ExternalName and headless ClusterIPs get no rules.
func Build(services []*v1.Service, endpointSlices []*discoveryv1.EndpointSlice, node Node, opts Options) *Ruleset {
	b := newBaseBuilder(node, opts)
	r := b.r

	bySvc := slicesByService(endpointSlices)
	sorted := slices.Clone(services)
	slices.SortFunc(sorted, func(a, c *v1.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, c.Namespace), cmp.Compare(a.Name, c.Name))
	})
	for _, svc := range sorted {
		if svc == nil || svc.Spec.Type == v1.ServiceTypeExternalName {
			continue
		}
		b.addService(svc, bySvc[svc.Namespace+"/"+svc.Name])
	}
	return r
}

// newBaseBuilder starts a Ruleset with what does not depend on Services:
// the skeleton, the node's and pods' addresses, and pick chains for the
// usual endpoint counts, which exist up front so that a Service scaling
// among them is a partial sync (see Applier).
func newBaseBuilder(node Node, opts Options) builder {
	b := builder{r: newRuleset(), node: node, opts: opts, nodePortIPs: map[string][]netip.Addr{}}
	addSkeleton(b.r, opts)
	b.addNodeAndPodAddresses()
	for n := 1; n <= PrecreatedPickChains; n++ {
		for _, f := range families {
			for _, k := range pickKinds {
				if !k.fromPod || b.localDetected(f) {
					b.pickChain(f, k, n)
				}
			}
		}
	}
	return b
}

// fork starts a Ruleset from this builder's: its own chain and element
// maps, holding the same chains, node elements and (shared, never written
// again) set and map definitions. A Builder forks its skeleton for each
// Ruleset instead of building the skeleton again.
func (b *builder) fork() *Ruleset {
	r := &Ruleset{
		Chains:   maps.Clone(b.r.Chains),
		Sets:     b.r.Sets,
		Maps:     b.r.Maps,
		Elements: maps.Clone(b.r.Elements),
		Affinity: map[string]map[string]bool{},
	}
	return r
}

type builder struct {
	r           *Ruleset
	node        Node
	opts        Options
	nodePortIPs map[string][]netip.Addr // by family suffix
}

func (b *builder) addNodeAndPodAddresses() {
	for _, ip := range b.node.IPs {
		ip = ip.Unmap()
		if !ip.IsValid() || !nodePortAllowed(ip, b.opts.NodePortCIDRs) {
			continue
		}
		f := familyOf(ip.Is6())
		b.nodePortIPs[f.n] = append(b.nodePortIPs[f.n], ip)
		b.r.addElement(f.nodePortIPs(), Element{Key: []string{ip.String()}})
	}
	if b.opts.Local.Interface != "" {
		return // the interface decides; the pod ranges are not looked at
	}
	for _, p := range b.opts.Local.PodCIDRs {
		p = p.Masked()
		f := familyOf(p.Addr().Is6())
		b.r.addElement(f.podCIDRs(), Element{Key: []string{p.String()}})
	}
}

func nodePortAllowed(ip netip.Addr, cidrs []netip.Prefix) bool {
	if len(cidrs) == 0 {
		return true
	}
	for _, c := range cidrs {
		if c.Contains(ip) {
			return true
		}
	}
	return false
}

// svcPlan is what applies to every frontend of one service port.
type svcPlan struct {
	svc      *v1.Service
	name     string // namespace/name:port, used as element comment
	eps      []endpoint
	itpLocal bool
	etpLocal bool
	affinity int32 // ClientIP timeout in seconds, 0 without affinity
	ranges   []netip.Prefix
}

func (b *builder) addService(svc *v1.Service, sl []*discoveryv1.EndpointSlice) {
	plan := svcPlan{
		svc:      svc,
		itpLocal: svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == v1.ServiceInternalTrafficPolicyLocal,
		etpLocal: svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal,
		affinity: affinityTimeout(svc),
		ranges:   sourceRanges(svc),
	}
	for _, sp := range svc.Spec.Ports {
		proto, ok := nftProto(protocolOf(sp))
		if !ok {
			continue
		}
		plan.name = fmt.Sprintf("%s/%s:%s", svc.Namespace, svc.Name, portName(sp))
		for _, v6 := range []bool{false, true} {
			plan.eps = portEndpoints(sl, sp, v6, b.node)
			for _, fe := range frontends(svc, sp, proto, v6) {
				b.addFrontend(familyOf(v6), fe, plan)
			}
		}
	}
}

func portName(sp v1.ServicePort) string {
	if sp.Name != "" {
		return sp.Name
	}
	return strconv.Itoa(int(sp.Port))
}

func nftProto(p v1.Protocol) (string, bool) {
	switch p {
	case v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP:
		return strings.ToLower(string(p)), true
	}
	return "", false
}

func affinityTimeout(svc *v1.Service) int32 {
	if svc.Spec.SessionAffinity != v1.ServiceAffinityClientIP {
		return 0
	}
	c := svc.Spec.SessionAffinityConfig
	if c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil && *c.ClientIP.TimeoutSeconds > 0 {
		return *c.ClientIP.TimeoutSeconds
	}
	return defaultAffinitySeconds
}

func sourceRanges(svc *v1.Service) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range svc.Spec.LoadBalancerSourceRanges {
		if p, err := netip.ParsePrefix(strings.TrimSpace(s)); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// frontends lists where clients reach one service port in one family.
func frontends(svc *v1.Service, sp v1.ServicePort, proto string, v6 bool) []frontend {
	var out []frontend
	add := func(s string, external, lb bool) {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Unmap().Is6() != v6 {
			return
		}
		out = append(out, frontend{addr: a.Unmap(), proto: proto, port: sp.Port, external: external, lb: lb})
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	for _, ip := range ips {
		add(ip, false, false)
	}
	t := svc.Spec.Type
	if (t == v1.ServiceTypeNodePort || t == v1.ServiceTypeLoadBalancer) && sp.NodePort != 0 {
		out = append(out, frontend{nodePort: true, proto: proto, port: sp.NodePort, external: true})
	}
	if t == v1.ServiceTypeLoadBalancer {
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			// Proxy mode means the load balancer rewrites the destination
			// itself; capturing its VIP here would bypass it.
			if ing.IPMode != nil && *ing.IPMode == v1.LoadBalancerIPModeProxy {
				continue
			}
			add(ing.IP, true, true)
		}
	}
	for _, ip := range svc.Spec.ExternalIPs {
		add(ip, true, false)
	}
	return out
}
