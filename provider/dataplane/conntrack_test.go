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
	slicesOf := func(eps []ep) []*discoveryv1.EndpointSlice {
		if eps == nil {
			return nil
		}
		return []*discoveryv1.EndpointSlice{endpointSlice("dns", "dns-1", discoveryv1.AddressTypeIPv4, slicePorts, eps...)}
	}
	a := ep{ip: "198.51.100.1", node: thisNode}
	b := ep{ip: "198.51.100.2", node: otherNode}
	epB := netip.MustParseAddrPort("198.51.100.2:5353")
	cip := netip.MustParseAddr("203.0.113.53")
	none := []ep{}

	for _, tc := range []struct {
		name       string
		first      bool // no previous sync
		prev, next []ep
		want       []StaleFlow
	}{
		{name: "first sync: nothing known", first: true, next: []ep{a, b}},
		{name: "no change", prev: []ep{a, b}, next: []ep{a, b}},
		{name: "endpoint added: old flows still valid", prev: []ep{a}, next: []ep{a, b}},
		{
			name: "endpoint removed: its UDP flows, ClusterIP and NodePort, not TCP",
			prev: []ep{a, b}, next: []ep{a},
			want: []StaleFlow{{Port: 30053, Endpoint: epB}, {Dst: cip, Port: 53, Endpoint: epB}},
		},
		{
			name: "first endpoint: flows made while nothing served",
			prev: none, next: []ep{b},
			want: []StaleFlow{{Port: 30053}, {Dst: cip, Port: 53}},
		},
		{
			name: "last endpoint gone",
			prev: []ep{b}, next: none,
			want: []StaleFlow{{Port: 30053, Endpoint: epB}, {Dst: cip, Port: 53, Endpoint: epB}},
		},
		{name: "endpoint replaced", prev: []ep{b}, next: []ep{a},
			want: []StaleFlow{{Port: 30053, Endpoint: epB}, {Dst: cip, Port: 53, Endpoint: epB}}},
	} {
		// Both ways the agent can get its rulesets: separate Builds, and one
		// incremental Builder whose previous Ruleset goes stale.
		t.Run(tc.name, func(t *testing.T) {
			var prev *Ruleset
			if !tc.first {
				prev = Build([]*v1.Service{dns()}, slicesOf(tc.prev), testNode, Options{})
			}
			got := StaleUDPFlows(prev, Build([]*v1.Service{dns()}, slicesOf(tc.next), testNode, Options{}))
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("separate builds:\n got %+v\nwant %+v", got, tc.want)
			}
		})
		t.Run(tc.name+" (incremental)", func(t *testing.T) {
			builder := NewBuilder()
			svc := dns()
			var prev *Ruleset
			if !tc.first {
				prev = buildObjects(builder, []*v1.Service{svc}, slicesOf(tc.prev), testNode, Options{})
			}
			got := StaleUDPFlows(prev, buildObjects(builder, []*v1.Service{svc}, slicesOf(tc.next), testNode, Options{}))
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("incremental:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}
