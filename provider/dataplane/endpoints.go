package dataplane

import (
	"cmp"
	"net/netip"
	"slices"

	discoveryv1 "k8s.io/api/discovery/v1"
)

// endpoint is one backend of one service port.
type endpoint struct {
	addr        netip.Addr
	port        int32
	local       bool
	ready       bool
	serving     bool
	terminating bool
	// The EndpointSlice controller's topology hints (trafficDistribution
	// PreferSameNode/PreferSameZone, or topology-aware routing): whether the
	// endpoint has any node or zone hint, and whether one names this node
	// or its zone.
	nodeHinted, zoneHinted bool
	forNode, forZone       bool
}

// slicesByService groups EndpointSlices by "namespace/service". The service
// label, not a selector, is what ties a slice to its Service, so manually
// managed slices of selector-less Services are found the same way.
func slicesByService(all []*EndpointSlice) map[string][]*EndpointSlice {
	out := map[string][]*EndpointSlice{}
	for _, s := range all {
		if s.Service == "" {
			continue
		}
		key := s.Namespace + "/" + s.Service
		out[key] = append(out[key], s)
	}
	return out
}

// portEndpoints returns the endpoints of one service port in one family,
// sorted and de-duplicated (a pod may appear in two slices while the
// controller moves it), so that index i means the same endpoint on every sync.
func portEndpoints(sl []*EndpointSlice, sp ServicePort, v6 bool, node Node) []endpoint {
	want := discoveryv1.AddressTypeIPv4
	if v6 {
		want = discoveryv1.AddressTypeIPv6
	}
	seen := map[netip.AddrPort]int{}
	var out []endpoint
	for _, s := range sl {
		if s.AddressType != want {
			continue
		}
		port, ok := slicePort(s, sp)
		if !ok {
			continue
		}
		for i := range s.Endpoints {
			ep := &s.Endpoints[i]
			if !ep.Addr.IsValid() || ep.Addr.Is6() != v6 {
				continue
			}
			e := newEndpoint(ep, port, node)
			ap := netip.AddrPortFrom(e.addr, uint16(port))
			if j, dup := seen[ap]; dup {
				// keep the most usable view of a duplicated endpoint
				out[j].ready = out[j].ready || e.ready
				out[j].serving = out[j].serving || e.serving
				continue
			}
			seen[ap] = len(out)
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b endpoint) int {
		if c := a.addr.Compare(b.addr); c != 0 {
			return c
		}
		return cmp.Compare(a.port, b.port)
	})
	return out
}

func newEndpoint(ep *Endpoint, port int32, node Node) endpoint {
	e := endpoint{
		addr: ep.Addr.Unmap(), port: port,
		local:       node.Name != "" && ep.Node == node.Name,
		ready:       ep.Ready && !ep.Terminating,
		serving:     ep.Serving,
		terminating: ep.Terminating,
	}
	if h := ep.Hints; h != nil {
		e.nodeHinted = len(h.ForNodes) > 0
		e.forNode = node.Name != "" && slices.Contains(h.ForNodes, node.Name)
		e.zoneHinted = len(h.ForZones) > 0
		e.forZone = node.Zone != "" && slices.Contains(h.ForZones, node.Zone)
	}
	return e
}

// slicePort finds the slice port that serves sp: same name and protocol.
func slicePort(s *EndpointSlice, sp ServicePort) (int32, bool) {
	for _, p := range s.Ports {
		if p.Name == sp.Name && p.Protocol == sp.Protocol {
			return p.Port, true
		}
	}
	return 0, false
}

// usable picks the endpoints traffic may go to: the ready ones in scope, or,
// when none is ready, those still serving while terminating, so that a
// rolling update of the last pods does not blackhole in-flight clients.
// Outside a Local policy, the ready ones are narrowed by topology hints as
// kube-proxy does (see preferred).
func usable(eps []endpoint, localOnly bool) []endpoint {
	admit := func(endpoint) bool { return true }
	if !localOnly {
		admit = preferred(eps)
	}
	var ready, fallback []endpoint
	for _, e := range eps {
		if localOnly && !e.local {
			continue
		}
		switch {
		case e.ready:
			if admit(e) {
				ready = append(ready, e)
			}
		case e.serving && e.terminating:
			fallback = append(fallback, e)
		}
	}
	if len(ready) > 0 {
		return ready
	}
	return fallback
}

// preferred reads the topology hints as kube-proxy does: when every ready
// endpoint has a node hint and one names this node, only those hinted for
// this node are used (PreferSameNode); else, when every ready endpoint has
// a zone hint and one names this node's zone, only those (PreferSameZone,
// topology-aware routing). Otherwise, hints are ignored: a partly hinted
// slice is one the controller is still writing, and no hint for this node
// or zone must not leave it without endpoints.
func preferred(eps []endpoint) func(endpoint) bool {
	anyReady, allNode, forNode, allZone, forZone := false, true, false, true, false
	for _, e := range eps {
		if !e.ready {
			continue
		}
		anyReady = true
		allNode, forNode = allNode && e.nodeHinted, forNode || e.forNode
		allZone, forZone = allZone && e.zoneHinted, forZone || e.forZone
	}
	switch {
	case anyReady && allNode && forNode:
		return func(e endpoint) bool { return e.forNode }
	case anyReady && allZone && forZone:
		return func(e endpoint) bool { return e.forZone }
	}
	return func(endpoint) bool { return true }
}
