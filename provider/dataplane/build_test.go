package dataplane

import (
	"net/netip"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

func addrsOf(eps []endpoint) []string {
	var out []string
	for _, e := range eps {
		out = append(out, netip.AddrPortFrom(e.addr, uint16(e.port)).String())
	}
	return out
}

func TestUsable(t *testing.T) {
	mk := func(ip string, local, ready, serving, term bool) endpoint {
		return endpoint{addr: netip.MustParseAddr(ip), port: 80, local: local, ready: ready, serving: serving, terminating: term}
	}
	r1 := mk("192.0.2.1", false, true, true, false)
	r2 := mk("192.0.2.2", true, true, true, false)
	t1 := mk("192.0.2.3", true, false, true, true)
	t2 := mk("192.0.2.4", false, false, true, true)
	nr := mk("192.0.2.5", true, false, false, false)
	dead := mk("192.0.2.6", true, false, false, true)
	cases := []struct {
		name      string
		eps       []endpoint
		localOnly bool
		want      []string
	}{
		{"ready ones", []endpoint{r1, r2, t1, nr}, false, []string{"192.0.2.1:80", "192.0.2.2:80"}},
		{"local ready", []endpoint{r1, r2, t1}, true, []string{"192.0.2.2:80"}},
		{"terminating fallback", []endpoint{t1, t2, nr, dead}, false, []string{"192.0.2.3:80", "192.0.2.4:80"}},
		{"local terminating fallback though remote ready", []endpoint{r1, t1}, true, []string{"192.0.2.3:80"}},
		{"nothing usable", []endpoint{nr, dead}, false, nil},
		{"no local", []endpoint{r1, t2}, true, nil},
	}
	for _, c := range cases {
		if got := addrsOf(usable(c.eps, c.localOnly)); !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v want %v", c.name, got, c.want)
		}
	}
}

func TestPortEndpoints(t *testing.T) {
	sp := port("http", v1.ProtocolTCP, 80, 0)
	other := []discoveryv1.EndpointPort{epPort("metrics", v1.ProtocolTCP, 9090)}
	udp := []discoveryv1.EndpointPort{epPort("http", v1.ProtocolUDP, 8080)}
	nilConds := endpointSlice("web", "nil", v4, httpPorts)
	nilConds.Endpoints = append(nilConds.Endpoints, discoveryv1.Endpoint{Addresses: []string{"192.0.2.9"}})
	sl := []*discoveryv1.EndpointSlice{
		endpointSlice("web", "b", v4, httpPorts, ep{"192.0.2.3", thisNode, ready}, ep{"192.0.2.1", otherNode, ready}),
		// the same pod again while it moves between slices
		endpointSlice("web", "c", v4, httpPorts, ep{"192.0.2.3", thisNode, notReady}),
		endpointSlice("web", "metrics", v4, other, ep{"192.0.2.50", thisNode, ready}),
		endpointSlice("web", "udp", v4, udp, ep{"192.0.2.51", thisNode, ready}),
		endpointSlice("web", "six", v6, httpPorts, ep{"2001:db8::3", thisNode, ready}),
		nilConds,
	}
	got := portEndpoints(slicesFrom(sl), ServiceFrom(&v1.Service{Spec: v1.ServiceSpec{Ports: []v1.ServicePort{sp}}}).Ports[0], false, Node{Name: thisNode})
	if want := []string{"192.0.2.1:8080", "192.0.2.3:8080", "192.0.2.9:8080"}; !slices.Equal(addrsOf(got), want) {
		t.Fatalf("got %v want %v", addrsOf(got), want)
	}
	if !got[1].local || !got[1].ready || got[0].local {
		t.Errorf("locality or readiness lost: %+v", got)
	}
	if !got[2].ready {
		t.Errorf("nil conditions must read as ready: %+v", got[2])
	}
	if six := portEndpoints(slicesFrom(sl), ServiceFrom(&v1.Service{Spec: v1.ServiceSpec{Ports: []v1.ServicePort{sp}}}).Ports[0], true, Node{Name: thisNode}); !slices.Equal(addrsOf(six), []string{"[2001:db8::3]:8080"}) {
		t.Errorf("IPv6: %v", addrsOf(six))
	}
}

// TestBuildIsDeterministic: the informers list Services and EndpointSlices
// in no particular order, and the whole Ruleset must not depend on it. The
// builder states include a frontend claimed by two Services, where only
// Build's own ordering decides the winner.
func TestBuildIsDeterministic(t *testing.T) {
	svcs, sl := traceCluster()
	states := append(builderStates(), buildState{name: "trace cluster", svcs: svcs, slices: sl, node: testNode})
	for _, s := range states {
		want := Build(s.svcs, s.slices, s.node, s.opts)
		for shift := 1; shift < len(s.svcs); shift += max(1, len(s.svcs)/3) {
			for _, reverse := range []bool{false, true} {
				svcs, sl := rotated(s.svcs, shift, reverse), rotated(s.slices, shift, reverse)
				for _, d := range rulesetDiffs(Build(svcs, sl, s.node, s.opts), want) {
					t.Errorf("%s, inputs rotated by %d (reversed %t): %s", s.name, shift, reverse, d)
				}
			}
		}
	}
}

// rotated is a copy of in rotated left by n, then reversed if asked.
func rotated[T any](in []T, n int, reverse bool) []T {
	if len(in) == 0 {
		return nil
	}
	n %= len(in)
	out := append(slices.Clone(in[n:]), in[:n]...)
	if reverse {
		slices.Reverse(out)
	}
	return out
}
