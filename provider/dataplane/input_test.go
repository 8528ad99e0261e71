package dataplane

import (
	"net/netip"
	"reflect"
	"sync"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// compactForms gives each API object of a test one compact form, as the
// agent's informer cache holds one per object version: the Builder tells
// changed objects by pointer, so converting afresh on every call would make
// every object look changed.
var compactForms = struct {
	sync.Mutex
	svcs   map[*v1.Service]*Service
	slices map[*discoveryv1.EndpointSlice]*EndpointSlice
}{svcs: map[*v1.Service]*Service{}, slices: map[*discoveryv1.EndpointSlice]*EndpointSlice{}}

func compactServices(in []*v1.Service) []*Service {
	compactForms.Lock()
	defer compactForms.Unlock()
	return compactOnce(compactForms.svcs, in, ServiceFrom)
}

func compactSlices(in []*discoveryv1.EndpointSlice) []*EndpointSlice {
	compactForms.Lock()
	defer compactForms.Unlock()
	return compactOnce(compactForms.slices, in, EndpointSliceFrom)
}

// compactOnce converts each object the first time it is seen.
func compactOnce[In, Out any](seen map[*In]*Out, in []*In, from func(*In) *Out) []*Out {
	out := make([]*Out, 0, len(in))
	for _, o := range in {
		c := seen[o]
		if c == nil {
			c = from(o)
			seen[o] = c
		}
		out = append(out, c)
	}
	return out
}

// buildObjects is b.Build over API objects.
func buildObjects(b *Builder, svcs []*v1.Service, sl []*discoveryv1.EndpointSlice, node Node, opts Options) *Ruleset {
	return b.Build(compactServices(svcs), compactSlices(sl), node, opts)
}

// TestServiceFrom: a Service is read as the rules need it, each field's
// defaults and invalid values as Build always read them.
func TestServiceFrom(t *testing.T) {
	addrs := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	tests := []struct {
		name string
		svc  *v1.Service
		want Service
	}{
		{"spec.clusterIP alone, protocol defaulted",
			&v1.Service{Spec: v1.ServiceSpec{Type: v1.ServiceTypeClusterIP, ClusterIP: "198.51.100.1",
				Ports: []v1.ServicePort{{Name: "dns", Port: 53}, {Protocol: v1.ProtocolUDP, Port: 53}}}},
			Service{Type: v1.ServiceTypeClusterIP, ClusterIPs: addrs("198.51.100.1"),
				Ports: []ServicePort{{Name: "dns", Protocol: v1.ProtocolTCP, Port: 53}, {Protocol: v1.ProtocolUDP, Port: 53}}}},
		{"headless: no address",
			&v1.Service{Spec: v1.ServiceSpec{ClusterIP: v1.ClusterIPNone, ClusterIPs: []string{v1.ClusterIPNone}}},
			Service{Ports: []ServicePort{}}},
		{"load balancer: Proxy-mode and hostname ingress left out, mapped addresses unmapped",
			&v1.Service{
				Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, ClusterIPs: []string{"198.51.100.1", "2001:db8::1"},
					ExternalIPs:              []string{"::ffff:192.0.2.7", "not-an-ip"},
					LoadBalancerSourceRanges: []string{" 203.0.113.77/24 ", "nonsense"},
					ExternalTrafficPolicy:    v1.ServiceExternalTrafficPolicyLocal, HealthCheckNodePort: 32000,
					InternalTrafficPolicy: ptr.To(v1.ServiceInternalTrafficPolicyLocal)},
				Status: v1.ServiceStatus{LoadBalancer: v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{
					{IP: "203.0.113.1"}, {IP: "203.0.113.2", IPMode: ptr.To(v1.LoadBalancerIPModeProxy)},
					{IP: "203.0.113.3", IPMode: ptr.To(v1.LoadBalancerIPModeVIP)}, {Hostname: "lb.example"}}}}},
			Service{Type: v1.ServiceTypeLoadBalancer, ClusterIPs: addrs("198.51.100.1", "2001:db8::1"),
				ExternalIPs: addrs("192.0.2.7"), LoadBalancerIPs: addrs("203.0.113.1", "203.0.113.3"),
				SourceRanges: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, Ports: []ServicePort{},
				ExternalLocal: true, InternalLocal: true, HealthCheckNodePort: 32000}},
		{"ClientIP affinity, default timeout",
			&v1.Service{Spec: v1.ServiceSpec{SessionAffinity: v1.ServiceAffinityClientIP}},
			Service{AffinitySeconds: defaultAffinitySeconds, Ports: []ServicePort{}}},
		{"ClientIP affinity, own timeout",
			&v1.Service{Spec: v1.ServiceSpec{SessionAffinity: v1.ServiceAffinityClientIP, SessionAffinityConfig: &v1.SessionAffinityConfig{
				ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](30)}}}},
			Service{AffinitySeconds: 30, Ports: []ServicePort{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ServiceFrom(tt.svc); !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

// TestEndpointSliceFrom: conditions are read as the API asks (nil ready
// is ready, nil serving follows ready, nil terminating is not), ports
// without a number serve nothing, and an endpoint keeps its first address
// as written.
func TestEndpointSliceFrom(t *testing.T) {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv6,
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)},
			{Name: ptr.To("none")}, {Protocol: ptr.To(v1.ProtocolUDP), Port: ptr.To[int32](53)}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"2001:db8::1", "2001:db8::2"}, NodeName: ptr.To("n1"),
				Hints: &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "a"}}, ForNodes: []discoveryv1.ForNode{{Name: "n1"}}}},
			{Addresses: []string{"::ffff:192.0.2.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
			{Addresses: []string{"bogus"}, Conditions: discoveryv1.EndpointConditions{
				Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}},
			{},
		},
	}
	want := EndpointSlice{Namespace: "ns", Name: "web-1", Service: "web", AddressType: discoveryv1.AddressTypeIPv6,
		Ports: []EndpointPort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 8080}, {Protocol: v1.ProtocolUDP, Port: 53}},
		Endpoints: []Endpoint{
			{Addr: netip.MustParseAddr("2001:db8::1"), Node: "n1", Ready: true, Serving: true,
				Hints: &Hints{ForNodes: []string{"n1"}, ForZones: []string{"a"}}},
			{Addr: netip.MustParseAddr("::ffff:192.0.2.1")},
			{Serving: true, Terminating: true},
			{Ready: true, Serving: true},
		}}
	if got := EndpointSliceFrom(s); !reflect.DeepEqual(*got, want) {
		t.Errorf("got  %+v\nwant %+v", *got, want)
	}
}
