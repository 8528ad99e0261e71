package dataplane

import (
	"slices"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
)

// TestTopologyHints: hints narrow the ready endpoints only when every ready
// endpoint carries one and one names this node (or zone); otherwise, and
// under a Local policy, they change nothing. kube-proxy's
// CategorizeEndpoints is the reference.
func TestTopologyHints(t *testing.T) {
	node := Node{Name: thisNode, Zone: "zone-a"}
	// hinted makes one ready endpoint with the given hints, read as node
	// would read it.
	hinted := func(ip string, local bool, nodes []string, zones []string, conds epState) endpoint {
		h := &discoveryv1.EndpointHints{}
		for _, n := range nodes {
			h.ForNodes = append(h.ForNodes, discoveryv1.ForNode{Name: n})
		}
		for _, z := range zones {
			h.ForZones = append(h.ForZones, discoveryv1.ForZone{Name: z})
		}
		if nodes == nil && zones == nil {
			h = nil
		}
		onNode := otherNode
		if local {
			onNode = thisNode
		}
		s := endpointSlice("web", "web-1", v4, httpPorts, ep{ip, onNode, conds})
		s.Endpoints[0].Hints = h
		return newEndpoint(&EndpointSliceFrom(s).Endpoints[0], 80, node)
	}
	zoneA := func(ip string) endpoint { return hinted(ip, false, nil, []string{"zone-a"}, ready) }
	zoneB := func(ip string) endpoint { return hinted(ip, false, nil, []string{"zone-b"}, ready) }
	cases := []struct {
		name      string
		eps       []endpoint
		localOnly bool
		want      []string
	}{
		{"same zone preferred", []endpoint{zoneA("192.0.2.1"), zoneB("192.0.2.2"), zoneA("192.0.2.3")}, false,
			[]string{"192.0.2.1:80", "192.0.2.3:80"}},
		{"no endpoint for this zone: all", []endpoint{zoneB("192.0.2.1"), zoneB("192.0.2.2")}, false,
			[]string{"192.0.2.1:80", "192.0.2.2:80"}},
		{"one ready endpoint without a hint: all", []endpoint{zoneA("192.0.2.1"), hinted("192.0.2.2", false, nil, nil, ready)}, false,
			[]string{"192.0.2.1:80", "192.0.2.2:80"}},
		{"a not-ready endpoint without a hint does not count", []endpoint{zoneA("192.0.2.1"), zoneB("192.0.2.2"),
			hinted("192.0.2.3", false, nil, nil, notReady)}, false, []string{"192.0.2.1:80"}},
		{"same node preferred over same zone", []endpoint{
			hinted("192.0.2.1", true, []string{thisNode}, []string{"zone-a"}, ready),
			hinted("192.0.2.2", false, []string{otherNode}, []string{"zone-a"}, ready)}, false, []string{"192.0.2.1:80"}},
		{"node hints for other nodes only: zone hints", []endpoint{
			hinted("192.0.2.1", false, []string{otherNode}, []string{"zone-a"}, ready),
			hinted("192.0.2.2", false, []string{otherNode}, []string{"zone-b"}, ready)}, false, []string{"192.0.2.1:80"}},
		{"Local policy ignores hints", []endpoint{
			hinted("192.0.2.1", true, nil, []string{"zone-b"}, ready), zoneA("192.0.2.2")}, true, []string{"192.0.2.1:80"}},
		{"terminating fallback ignores hints", []endpoint{
			hinted("192.0.2.1", false, nil, []string{"zone-b"}, terminatingServing)}, false, []string{"192.0.2.1:80"}},
	}
	for _, c := range cases {
		if got := addrsOf(usable(c.eps, c.localOnly)); !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v want %v", c.name, got, c.want)
		}
	}
	// A node without a zone label matches no zone hint.
	noZone := Node{Name: thisNode}
	s := endpointSlice("web", "web-1", v4, httpPorts, ep{"192.0.2.1", otherNode, ready})
	s.Endpoints[0].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: ""}}}
	if e := newEndpoint(&EndpointSliceFrom(s).Endpoints[0], 80, noZone); e.forZone {
		t.Error("an empty zone hint matched a node without a zone")
	}
}
