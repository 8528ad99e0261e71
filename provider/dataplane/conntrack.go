package dataplane

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
)

// StaleFlow selects UDP conntrack entries that a sync has made wrong.
//
// UDP has no connection end: a client that keeps its source port (a DNS
// resolver, a game, a QUIC peer) keeps matching the conntrack entry made by
// its first datagram, with whatever NAT that entry got, for as long as it
// keeps sending. Rules changing does not touch that entry, so, as kube-proxy
// does, the agent deletes it: when an endpoint goes away (else the flow
// follows a dead pod), and when a frontend gets its first endpoint (else a
// flow that began while nothing served it stays un-NATed). TCP needs none of
// this: a dead endpoint resets or times the connection out, and the client's
// next connection is new.
type StaleFlow struct {
	IPv6 bool
	// Dst is the frontend address; invalid for a NodePort, which every node
	// address answers.
	Dst netip.Addr
	// Port is the frontend's port (the node port for a NodePort).
	Port uint16
	// Endpoint, when valid, narrows the flow to entries NATed to it: it is no
	// longer an endpoint of the frontend. When invalid, the frontend had no
	// endpoint before, and every entry to it is stale.
	Endpoint netip.AddrPort
}

// StaleUDPFlows compares the rulesets before and after a sync and returns the
// UDP conntrack entries to delete, sorted. prev nil (the first sync of an
// agent) yields nothing: what an earlier agent applied is unknown. When next
// was built incrementally from prev (a Builder updates its element maps in
// place, so prev no longer holds what it did), the Builder's record of the
// keys it changed is what is compared, which also keeps this O(changes).
func StaleUDPFlows(prev, next *Ruleset) []StaleFlow {
	if prev == nil || next == nil {
		return nil
	}
	var out []StaleFlow
	for _, f := range families {
		for _, m := range []string{f.ep(), f.npEp(), f.podEp(), f.podNpEp()} {
			var before, after endpointsByFrontend
			if next.base == prev && next.dirty != nil {
				before, after = changedUDPEndpoints(next, m)
			} else {
				before, after = udpEndpoints(prev.Elements[m]), udpEndpoints(next.Elements[m])
			}
			for fe, eps := range before.endpoints {
				for ep := range eps {
					if !after.endpoints[fe][ep] {
						out = append(out, staleFlow(f, fe, ep))
					}
				}
			}
			for fe := range after.firstSlot {
				if !before.firstSlot[fe] {
					out = append(out, staleFlow(f, fe, netip.AddrPort{}))
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b StaleFlow) int {
		return cmp.Or(cmp.Compare(btoi(a.IPv6), btoi(b.IPv6)), a.Dst.Compare(b.Dst), cmp.Compare(a.Port, b.Port),
			a.Endpoint.Compare(b.Endpoint))
	})
	// An endpoint leaving both a frontend's own list and its list for pods
	// (addPodBypass) is one flow to delete.
	return slices.Compact(out)
}

// udpFrontend is a UDP frontend as the endpoint maps key it.
type udpFrontend struct {
	addr netip.Addr // invalid for NodePorts
	port uint16
}

// endpointsByFrontend is the UDP part of an endpoint map: each frontend's
// endpoints, and which frontends have slot 0, i.e. have any endpoint at all
// (slots are filled from 0).
type endpointsByFrontend struct {
	endpoints map[udpFrontend]map[netip.AddrPort]bool
	firstSlot map[udpFrontend]bool
}

func (e *endpointsByFrontend) add(el Element) {
	fe, ep, slot, ok := parseUDPEndpoint(el)
	if !ok {
		return
	}
	if e.endpoints == nil {
		e.endpoints, e.firstSlot = map[udpFrontend]map[netip.AddrPort]bool{}, map[udpFrontend]bool{}
	}
	if e.endpoints[fe] == nil {
		e.endpoints[fe] = map[netip.AddrPort]bool{}
	}
	e.endpoints[fe][ep] = true
	if slot == "0" {
		e.firstSlot[fe] = true
	}
}

// udpEndpoints reads a whole endpoint map (ep4, npep6, ...).
func udpEndpoints(els Elements) endpointsByFrontend {
	var out endpointsByFrontend
	for _, e := range els {
		out.add(e)
	}
	return out
}

// changedUDPEndpoints reads only the keys a Builder changed, as they were
// and as they are. An endpoint that left a frontend left a changed slot, and
// one still there after a change sits in a changed slot too (slots are
// renumbered together, and an endpoint holds one slot per frontend), so the
// unchanged keys cannot turn an endpoint stale; likewise a frontend's first
// endpoint shows as slot 0 appearing.
func changedUDPEndpoints(next *Ruleset, container string) (before, after endpointsByFrontend) {
	for key, p := range next.dirty[container] {
		if p.present {
			before.add(p.el)
		}
		if el, ok := next.Elements[container][key]; ok {
			after.add(el)
		}
	}
	return before, after
}

// parseUDPEndpoint reads one endpoint map element. Keys are [addr,] proto,
// port, slot; values are endpoint address and port (see addFrontend).
func parseUDPEndpoint(e Element) (fe udpFrontend, ep netip.AddrPort, slot string, ok bool) {
	key := e.Key
	if len(key) == 4 {
		a, err := netip.ParseAddr(key[0])
		if err != nil {
			return fe, ep, "", false
		}
		fe.addr, key = a, key[1:]
	}
	if len(key) != 3 || key[0] != "udp" || len(e.Value) != 2 {
		return fe, ep, "", false
	}
	p, err1 := strconv.ParseUint(key[1], 10, 16)
	epAddr, err2 := netip.ParseAddr(e.Value[0])
	epPort, err3 := strconv.ParseUint(e.Value[1], 10, 16)
	if err1 != nil || err2 != nil || err3 != nil {
		return fe, ep, "", false
	}
	fe.port = uint16(p)
	return fe, netip.AddrPortFrom(epAddr, uint16(epPort)), key[2], true
}

func staleFlow(f ipFamily, fe udpFrontend, ep netip.AddrPort) StaleFlow {
	return StaleFlow{IPv6: f.n == "6", Dst: fe.addr, Port: fe.port, Endpoint: ep}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
