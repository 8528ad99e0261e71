package service

import (
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Class is the spec.loadBalancerClass herald answers to besides "no class".
const Class = "herald.dev/bare-metal"

// LoadBalancer is what a backend must make true for one Service.
type LoadBalancer struct {
	Service types.NamespacedName
	UID     types.UID
	// Name is stable for the Service's lifetime and short enough for any
	// cloud's resource names (the same form as the upstream default).
	Name     string
	Labels   map[string]string
	Selector map[string]string
	// Annotations are the Service's, for backends with annotations of
	// their own (aws); they parse and validate them.
	Annotations map[string]string

	Ports          []Port
	IPFamilies     []v1.IPFamily
	IPFamilyPolicy v1.IPFamilyPolicy

	// RequestedIPs are specific addresses the user asked for, at most one
	// per family; empty means any.
	RequestedIPs []netip.Addr
	// Pool names the address pool to allocate from; empty means any.
	Pool string
	// SharingKey lets Services with the same key share an address.
	SharingKey string

	ExternalTrafficPolicy v1.ServiceExternalTrafficPolicy
	HealthCheckNodePort   int32
	SourceRanges          []netip.Prefix

	// nodes are converted only when a backend asks (Nodes): at 5,000
	// Services and 1,000 Nodes, converting and sorting them on every sync
	// was 16% of herald-ccm's allocations, for a backend (bare-metal) that
	// never reads them.
	nodes []*v1.Node
}

// Port is one listener of the load balancer.
type Port struct {
	Name     string
	Protocol v1.Protocol
	Port     int32
	NodePort int32
}

// Node is a node traffic may be sent to.
type Node struct {
	Name      string
	Addresses []netip.Addr
	// ProviderID is the cloud's ID for the machine (aws:///zone/i-…).
	ProviderID string
	Labels     map[string]string
}

// Key is the namespace/name form used to index per-Service state.
func (lb *LoadBalancer) Key() string { return lb.Service.String() }

// Build validates svc and returns the load balancer it asks for. Errors are
// *AnnotationError or *SpecError so callers can report exactly what to fix.
func Build(svc *v1.Service, nodes []*v1.Node) (*LoadBalancer, error) {
	requested, err := parseRequestedIPs(svc)
	if err != nil {
		return nil, err
	}
	if err := checkRequestedFamilies(svc, requested); err != nil {
		return nil, err
	}
	pool, _, err := aliased(svc.Annotations, AnnotationAddressPool, metalLBAddressPool)
	if err != nil {
		return nil, err
	}
	sharingKey, _, err := aliased(svc.Annotations, AnnotationAllowSharedIP, metalLBAllowSharedIP)
	if err != nil {
		return nil, err
	}
	sourceRanges, err := parseSourceRanges(svc)
	if err != nil {
		return nil, err
	}
	lb := &LoadBalancer{
		Service:               types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name},
		UID:                   svc.UID,
		Name:                  Name(svc),
		Labels:                svc.Labels,
		Annotations:           svc.Annotations,
		Selector:              svc.Spec.Selector,
		IPFamilies:            slices.Clone(svc.Spec.IPFamilies),
		RequestedIPs:          requested,
		Pool:                  pool,
		SharingKey:            sharingKey,
		ExternalTrafficPolicy: svc.Spec.ExternalTrafficPolicy,
		HealthCheckNodePort:   svc.Spec.HealthCheckNodePort,
		SourceRanges:          sourceRanges,
		nodes:                 nodes,
	}
	if svc.Spec.IPFamilyPolicy != nil {
		lb.IPFamilyPolicy = *svc.Spec.IPFamilyPolicy
	}
	for _, p := range svc.Spec.Ports {
		lb.Ports = append(lb.Ports, Port{Name: p.Name, Protocol: p.Protocol, Port: p.Port, NodePort: p.NodePort})
	}
	return lb, nil
}

// checkRequestedFamilies rejects an address of a family the Service does not
// have: the apiserver would never route it, so allocating it would only hide
// the mistake.
func checkRequestedFamilies(svc *v1.Service, requested []netip.Addr) error {
	if len(svc.Spec.IPFamilies) == 0 {
		return nil
	}
	for _, ip := range requested {
		family := v1.IPv6Protocol
		if ip.Is4() {
			family = v1.IPv4Protocol
		}
		if !slices.Contains(svc.Spec.IPFamilies, family) {
			return &SpecError{Field: "ipFamilies", Value: familiesString(svc.Spec.IPFamilies),
				Reason: "requested address " + ip.String() + " is " + string(family) + ", which the Service does not have"}
		}
	}
	return nil
}

func familiesString(families []v1.IPFamily) string {
	parts := make([]string, len(families))
	for i, f := range families {
		parts[i] = string(f)
	}
	return strings.Join(parts, ",")
}

// Nodes are the nodes traffic may be sent to, sorted by name, with their
// internal and external addresses.
func (lb *LoadBalancer) Nodes() []Node { return buildNodes(lb.nodes) }

func buildNodes(nodes []*v1.Node) []Node {
	out := make([]Node, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, Node{Name: n.Name, ProviderID: n.Spec.ProviderID, Labels: n.Labels, Addresses: NodeAddresses(n)})
	}
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// NodeAddresses are n's internal and external IPs from its status, in
// status order, each once, IPv4-mapped ones as IPv4; hostnames and
// unparsable entries are skipped. Load balancers and herald-agent's
// NodePorts both use them, so that the two agree on a node's addresses.
func NodeAddresses(n *v1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != v1.NodeInternalIP && a.Type != v1.NodeExternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && !slices.Contains(out, ip.Unmap()) {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// Name is the load balancer name for svc: "a" and the UID without dashes,
// cut to 32 characters, which is what cloud-provider's default produces, so
// names stay stable if users move between providers.
func Name(svc *v1.Service) string {
	name := "a" + strings.ReplaceAll(string(svc.UID), "-", "")
	if len(name) > 32 {
		name = name[:32]
	}
	return name
}

// Selection says which LoadBalancer Services this herald instance handles.
type Selection struct {
	// ClassOnly restricts herald to Services that name its class, leaving
	// class-less ones to another implementation.
	ClassOnly bool
}

// Wants reports whether herald should provide a load balancer for svc.
// Services with another class are never touched.
func (s Selection) Wants(svc *v1.Service) bool {
	if svc.Spec.Type != v1.ServiceTypeLoadBalancer {
		return false
	}
	if svc.Spec.LoadBalancerClass == nil {
		return !s.ClassOnly
	}
	return *svc.Spec.LoadBalancerClass == Class
}

// Ref identifies a Service's load balancer without validating the Service,
// so that one with broken annotations can still be looked up and deleted.
type Ref struct {
	Service types.NamespacedName
	UID     types.UID
	Name    string
}

// RefOf returns the Ref of svc.
func RefOf(svc *v1.Service) Ref {
	return Ref{Service: types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}, UID: svc.UID, Name: Name(svc)}
}

// Key is the namespace/name form used to index per-Service state.
func (r Ref) Key() string { return r.Service.String() }

// Ref returns the reference of lb.
func (lb *LoadBalancer) Ref() Ref { return Ref{Service: lb.Service, UID: lb.UID, Name: lb.Name} }
