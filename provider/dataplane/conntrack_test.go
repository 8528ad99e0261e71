package dataplane

import (
	"net/netip"
	"reflect"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

func TestStaleUDPFlows(t *testing.T) {
	dns := func() *v1.Service {
		return service("dns", clusterIPs("203.0.113.53"), svcType(v1.ServiceTypeNodePort),
			ports(port("dns", v1.ProtocolUDP, 53, 30053), port("dns-tcp", v1.ProtocolTCP, 53, 30054)))
	}
	slicePorts := []discoveryv1.EndpointPort{epPort("dns", v1.ProtocolUDP, 5353), epPort("dns-tcp", v1.ProtocolTCP, 5353)}
	build := func(eps ...ep) *Ruleset {
		var slices []*discoveryv1.EndpointSlice
		if eps != nil {
			slices = append(slices, endpointSlice("dns", "dns-1", discoveryv1.AddressTypeIPv4, slicePorts, eps...))
		}
		return Build([]*v1.Service{dns()}, slices, testNode, Options{})
	}
	a := ep{ip: "198.51.100.1", node: thisNode}
	b := ep{ip: "198.51.100.2", node: otherNode}
	epB := netip.MustParseAddrPort("198.51.100.2:5353")
	cip := netip.MustParseAddr("203.0.113.53")

	for _, tc := range []struct {
		name       string
		prev, next *Ruleset
		want       []StaleFlow
	}{
		{name: "first sync: nothing known", prev: nil, next: build(a, b)},
		{name: "no change", prev: build(a, b), next: build(a, b)},
		{name: "endpoint added: old flows still valid", prev: build(a), next: build(a, b)},
		{
			name: "endpoint removed: its UDP flows, ClusterIP and NodePort, not TCP",
			prev: build(a, b), next: build(a),
			want: []StaleFlow{{Port: 30053, Endpoint: epB}, {Dst: cip, Port: 53, Endpoint: epB}},
		},
		{
			name: "first endpoint: flows made while nothing served",
			prev: build(), next: build(b),
			want: []StaleFlow{{Port: 30053}, {Dst: cip, Port: 53}},
		},
		{
			name: "last endpoint gone",
			prev: build(b), next: build(),
			want: []StaleFlow{{Port: 30053, Endpoint: epB}, {Dst: cip, Port: 53, Endpoint: epB}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := StaleUDPFlows(tc.prev, tc.next)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("StaleUDPFlows:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}
