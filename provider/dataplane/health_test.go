package dataplane

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestHealthChecks(t *testing.T) {
	hcnp := func(p int32) svcMod { return func(s *v1.Service) { s.Spec.HealthCheckNodePort = p } }
	twoPorts := ports(port("http", v1.ProtocolTCP, 80, 30080), port("https", v1.ProtocolTCP, 443, 30443))
	local := service("local", clusterIPs("198.51.100.1"), lbIngress("203.0.113.1"), etpLocal, twoPorts, hcnp(32000))
	cluster := service("cluster", clusterIPs("198.51.100.2"), lbIngress("203.0.113.2"), twoPorts, hcnp(32001))
	empty := service("empty", clusterIPs("198.51.100.3"), lbIngress("203.0.113.3"), etpLocal, twoPorts, hcnp(32002))
	noPort := service("noport", clusterIPs("198.51.100.4"), lbIngress("203.0.113.4"), etpLocal, twoPorts)
	bothPorts := []discoveryv1.EndpointPort{epPort("http", v1.ProtocolTCP, 8080), epPort("https", v1.ProtocolTCP, 8443)}
	slices := []*discoveryv1.EndpointSlice{
		endpointSlice("local", "local-1", discoveryv1.AddressTypeIPv4, bothPorts,
			ep{"192.0.2.101", thisNode, ready},              // counted once despite two ports
			ep{"192.0.2.102", thisNode, terminatingServing}, // draining: not counted
			ep{"192.0.2.103", thisNode, notReady},
			ep{"192.0.2.104", otherNode, ready}),
		endpointSlice("local", "local-2", discoveryv1.AddressTypeIPv6, bothPorts,
			ep{"2001:db8::101", thisNode, ready}),
		endpointSlice("cluster", "cluster-1", discoveryv1.AddressTypeIPv4, bothPorts,
			ep{"192.0.2.111", thisNode, ready}),
	}
	got := HealthChecks([]*v1.Service{local, cluster, empty, noPort}, slices, thisNode)
	want := map[types.NamespacedName]HealthCheck{
		{Namespace: "ns", Name: "local"}: {Port: 32000, LocalEndpoints: 2},
		{Namespace: "ns", Name: "empty"}: {Port: 32002, LocalEndpoints: 0},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %+v, want %+v", k, got[k], w)
		}
	}
}
