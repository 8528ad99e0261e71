package dataplane

import (
	"net/netip"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Test addresses come from the documentation ranges only.
const (
	thisNode  = "node-a"
	otherNode = "node-b"
)

var (
	nodeIP4  = netip.MustParseAddr("192.0.2.10")
	nodeIP6  = netip.MustParseAddr("2001:db8::10")
	testNode = Node{Name: thisNode, IPs: []netip.Addr{nodeIP4, nodeIP6}}
)

type svcMod func(*v1.Service)

func service(name string, mods ...svcMod) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec:       v1.ServiceSpec{Type: v1.ServiceTypeClusterIP, SessionAffinity: v1.ServiceAffinityNone},
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

func clusterIPs(ips ...string) svcMod {
	return func(s *v1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = ips[0], ips }
}

func ports(ps ...v1.ServicePort) svcMod {
	return func(s *v1.Service) { s.Spec.Ports = ps }
}

func svcType(t v1.ServiceType) svcMod { return func(s *v1.Service) { s.Spec.Type = t } }

func lbIngress(ips ...string) svcMod {
	return func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeLoadBalancer
		for _, ip := range ips {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
		}
	}
}

func externalIPs(ips ...string) svcMod { return func(s *v1.Service) { s.Spec.ExternalIPs = ips } }

func etpLocal(s *v1.Service) { s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal }
func itpLocal(s *v1.Service) {
	s.Spec.InternalTrafficPolicy = ptr.To(v1.ServiceInternalTrafficPolicyLocal)
}

func healthCheckNodePort(p int32) svcMod {
	return func(s *v1.Service) { s.Spec.HealthCheckNodePort = p }
}

func sourceRangesMod(r ...string) svcMod {
	return func(s *v1.Service) { s.Spec.LoadBalancerSourceRanges = r }
}

func clientIPAffinity(seconds int32) svcMod {
	return func(s *v1.Service) {
		s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: &seconds}}
	}
}

func port(name string, proto v1.Protocol, p, nodePort int32) v1.ServicePort {
	return v1.ServicePort{Name: name, Protocol: proto, Port: p, NodePort: nodePort}
}

type epState int

const (
	ready epState = iota
	terminatingServing
	notReady
)

type ep struct {
	ip    string
	node  string
	state epState
}

func endpointSlice(svcName, sliceName string, af discoveryv1.AddressType, ps []discoveryv1.EndpointPort, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "ns", Name: sliceName,
			Labels: map[string]string{discoveryv1.LabelServiceName: svcName},
		},
		AddressType: af,
		Ports:       ps,
	}
	for _, e := range eps {
		var c discoveryv1.EndpointConditions
		switch e.state {
		case ready:
			c = discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)}
		case terminatingServing:
			c = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}
		case notReady:
			c = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false), Terminating: ptr.To(false)}
		}
		d := discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: c}
		if e.node != "" {
			d.NodeName = ptr.To(e.node)
		}
		s.Endpoints = append(s.Endpoints, d)
	}
	return s
}

func epPort(name string, proto v1.Protocol, p int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr.To(name), Protocol: ptr.To(proto), Port: ptr.To(p)}
}
