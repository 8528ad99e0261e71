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
	return build(servicesFrom(services), slicesFrom(endpointSlices), node, opts)
}

func build(services []*Service, endpointSlices []*EndpointSlice, node Node, opts Options) *Ruleset {
	b := newBaseBuilder(node, opts)
	r := b.r

	bySvc := slicesByService(endpointSlices)
	sorted := slices.Clone(services)
	slices.SortFunc(sorted, func(a, c *Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, c.Namespace), cmp.Compare(a.Name, c.Name))
	})
	for _, svc := range sorted {
		if svc.Type == v1.ServiceTypeExternalName {
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
	name     string // namespace/name:port, used as element comment
	eps      []endpoint
	itpLocal bool
	etpLocal bool
	affinity int32 // ClientIP timeout in seconds, 0 without affinity
	ranges   []netip.Prefix
}

func (b *builder) addService(svc *Service, sl []*EndpointSlice) {
	plan := svcPlan{
		itpLocal: svc.InternalLocal,
		etpLocal: svc.ExternalLocal,
		affinity: svc.AffinitySeconds,
		ranges:   svc.SourceRanges,
	}
	for _, sp := range svc.Ports {
		proto, ok := nftProto(sp.Protocol)
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

func portName(sp ServicePort) string {
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

// frontends lists where clients reach one service port in one family.
func frontends(svc *Service, sp ServicePort, proto string, v6 bool) []frontend {
	var out []frontend
	add := func(addrs []netip.Addr, external, lb bool) {
		for _, a := range addrs {
			if a.Is6() == v6 {
				out = append(out, frontend{addr: a, proto: proto, port: sp.Port, external: external, lb: lb})
			}
		}
	}
	add(svc.ClusterIPs, false, false)
	t := svc.Type
	if (t == v1.ServiceTypeNodePort || t == v1.ServiceTypeLoadBalancer) && sp.NodePort != 0 {
		out = append(out, frontend{nodePort: true, proto: proto, port: sp.NodePort, external: true})
	}
	if t == v1.ServiceTypeLoadBalancer {
		// Ingress points in Proxy mode are left out (see Service): the load
		// balancer rewrites the destination itself, and capturing its VIP
		// here would bypass it.
		add(svc.LoadBalancerIPs, true, true)
	}
	add(svc.ExternalIPs, true, false)
	return out
}
