package dataplane

import (
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Service is what the data plane reads of a v1.Service, parsed once: the
// agent's informer cache holds these rather than v1.Services because at
// 10k Services a v1.Service with its metadata costs a kilobyte and this a
// fifth of that (docs/benchmarks.md). ServiceFrom makes one.
type Service struct {
	Namespace, Name string
	Type            v1.ServiceType
	// ClusterIPs, ExternalIPs and LoadBalancerIPs hold only the valid
	// addresses, unmapped; LoadBalancerIPs leaves out ingress points in
	// Proxy mode, which the load balancer rewrites itself.
	ClusterIPs      []netip.Addr
	ExternalIPs     []netip.Addr
	LoadBalancerIPs []netip.Addr
	// SourceRanges are loadBalancerSourceRanges that parse, masked.
	SourceRanges []netip.Prefix
	Ports        []ServicePort
	// ExternalLocal and InternalLocal are the Local traffic policies.
	ExternalLocal, InternalLocal bool
	// AffinitySeconds is the ClientIP affinity timeout, 0 without affinity.
	AffinitySeconds     int32
	HealthCheckNodePort int32
}

// ServicePort is one port of a Service.
type ServicePort struct {
	Name     string
	Protocol v1.Protocol // defaulted: never empty
	Port     int32
	NodePort int32
}

// EndpointSlice is what the data plane reads of an EndpointSlice.
// EndpointSliceFrom makes one.
type EndpointSlice struct {
	Namespace, Name string
	// Service is the kubernetes.io/service-name label: how a slice is tied
	// to its Service, with or without a selector. Empty: no Service's.
	Service     string
	AddressType discoveryv1.AddressType
	Ports       []EndpointPort
	Endpoints   []Endpoint
}

// EndpointPort is one port of an EndpointSlice; one without a number
// serves no Service port and is left out.
type EndpointPort struct {
	Name     string
	Protocol v1.Protocol // defaulted: never empty
	Port     int32
}

// Endpoint is one endpoint of an EndpointSlice, its conditions read as the
// API asks: a nil ready is true, a nil serving is ready, a nil terminating
// is false.
type Endpoint struct {
	// Addr is the first address as written; invalid when there is none
	// or it does not parse.
	Addr                        netip.Addr
	Node                        string
	Ready, Serving, Terminating bool
	// Hints are the topology hints, nil without any.
	Hints *Hints
}

// Hints are an endpoint's topology hints.
type Hints struct {
	ForNodes, ForZones []string
}

// ServiceFrom reads a v1.Service.
func ServiceFrom(svc *v1.Service) *Service {
	out := &Service{
		Namespace:           svc.Namespace,
		Name:                svc.Name,
		Type:                serviceType(svc.Spec.Type),
		ExternalLocal:       svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal,
		InternalLocal:       svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == v1.ServiceInternalTrafficPolicyLocal,
		AffinitySeconds:     affinityTimeout(svc),
		HealthCheckNodePort: svc.Spec.HealthCheckNodePort,
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	out.ClusterIPs = parseAddrs(ips)
	out.ExternalIPs = parseAddrs(svc.Spec.ExternalIPs)
	var lb []string
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IPMode == nil || *ing.IPMode != v1.LoadBalancerIPModeProxy {
			lb = append(lb, ing.IP)
		}
	}
	out.LoadBalancerIPs = parseAddrs(lb)
	for _, s := range svc.Spec.LoadBalancerSourceRanges {
		if p, err := netip.ParsePrefix(strings.TrimSpace(s)); err == nil {
			out.SourceRanges = append(out.SourceRanges, p.Masked())
		}
	}
	out.Ports = make([]ServicePort, len(svc.Spec.Ports))
	for i, sp := range svc.Spec.Ports {
		out.Ports[i] = ServicePort{Name: sp.Name, Protocol: protocol(&sp.Protocol), Port: sp.Port, NodePort: sp.NodePort}
	}
	return out
}

// EndpointSliceFrom reads an EndpointSlice.
func EndpointSliceFrom(s *discoveryv1.EndpointSlice) *EndpointSlice {
	out := &EndpointSlice{
		Namespace:   s.Namespace,
		Name:        s.Name,
		Service:     s.Labels[discoveryv1.LabelServiceName],
		AddressType: addressType(s.AddressType),
		Endpoints:   make([]Endpoint, len(s.Endpoints)),
	}
	for _, p := range s.Ports {
		if p.Port == nil {
			continue
		}
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		out.Ports = append(out.Ports, EndpointPort{Name: name, Protocol: protocol(p.Protocol), Port: *p.Port})
	}
	for i := range s.Endpoints {
		out.Endpoints[i] = endpointFrom(&s.Endpoints[i])
	}
	return out
}

func endpointFrom(ep *discoveryv1.Endpoint) Endpoint {
	c := ep.Conditions
	out := Endpoint{
		Ready:       c.Ready == nil || *c.Ready,
		Terminating: c.Terminating != nil && *c.Terminating,
	}
	out.Serving = out.Ready
	if c.Serving != nil {
		out.Serving = *c.Serving
	}
	if len(ep.Addresses) > 0 {
		if a, err := netip.ParseAddr(ep.Addresses[0]); err == nil {
			out.Addr = a
		}
	}
	if ep.NodeName != nil {
		out.Node = *ep.NodeName
	}
	if h := ep.Hints; h != nil && (len(h.ForNodes) > 0 || len(h.ForZones) > 0) {
		out.Hints = &Hints{}
		for _, n := range h.ForNodes {
			out.Hints.ForNodes = append(out.Hints.ForNodes, n.Name)
		}
		for _, z := range h.ForZones {
			out.Hints.ForZones = append(out.Hints.ForZones, z.Name)
		}
	}
	return out
}

func parseAddrs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return slices.Clip(out)
}

// protocol defaults a protocol to TCP, as the API does, and returns the
// package's constant rather than the decoded string, which 10k objects
// would otherwise each keep a copy of.
func protocol(p *v1.Protocol) v1.Protocol {
	if p == nil {
		return v1.ProtocolTCP
	}
	switch *p {
	case "", v1.ProtocolTCP:
		return v1.ProtocolTCP
	case v1.ProtocolUDP:
		return v1.ProtocolUDP
	case v1.ProtocolSCTP:
		return v1.ProtocolSCTP
	}
	return *p
}

func serviceType(t v1.ServiceType) v1.ServiceType {
	for _, c := range []v1.ServiceType{v1.ServiceTypeClusterIP, v1.ServiceTypeNodePort, v1.ServiceTypeLoadBalancer, v1.ServiceTypeExternalName} {
		if t == c {
			return c
		}
	}
	return t
}

func addressType(t discoveryv1.AddressType) discoveryv1.AddressType {
	for _, c := range []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN} {
		if t == c {
			return c
		}
	}
	return t
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

// servicesFrom and slicesFrom read lists of API objects, skipping nils.
func servicesFrom(in []*v1.Service) []*Service { return convertAll(in, ServiceFrom) }

func slicesFrom(in []*discoveryv1.EndpointSlice) []*EndpointSlice {
	return convertAll(in, EndpointSliceFrom)
}

func convertAll[In, Out any](in []*In, from func(*In) *Out) []*Out {
	out := make([]*Out, 0, len(in))
	for _, o := range in {
		if o != nil {
			out = append(out, from(o))
		}
	}
	return out
}
