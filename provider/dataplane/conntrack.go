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
// agent) yields nothing: what an earlier agent applied is unknown.
func StaleUDPFlows(prev, next *Ruleset) []StaleFlow {
	if prev == nil || next == nil {
		return nil
	}
	var out []StaleFlow
	for _, f := range families {
		for _, m := range []string{f.ep(), f.npEp()} {
			before, after := udpEndpoints(prev, m), udpEndpoints(next, m)
			for fe, eps := range before {
				for ep := range eps {
					if !after[fe][ep] {
						out = append(out, staleFlow(f, fe, ep))
					}
				}
			}
			for fe := range after {
				if _, ok := before[fe]; !ok {
					out = append(out, staleFlow(f, fe, netip.AddrPort{}))
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b StaleFlow) int {
		return cmp.Or(cmp.Compare(btoi(a.IPv6), btoi(b.IPv6)), a.Dst.Compare(b.Dst), cmp.Compare(a.Port, b.Port),
			a.Endpoint.Compare(b.Endpoint))
	})
	return out
}

// udpFrontend is a UDP frontend as the endpoint maps key it.
type udpFrontend struct {
	addr netip.Addr // invalid for NodePorts
	port uint16
}

// udpEndpoints reads an endpoint map (ep4, npep6, ...) back into the UDP
// endpoints of each frontend. Keys are [addr,] proto, port, index; values
// are endpoint address and port (see addFrontend).
func udpEndpoints(r *Ruleset, container string) map[udpFrontend]map[netip.AddrPort]bool {
	out := map[udpFrontend]map[netip.AddrPort]bool{}
	for _, e := range r.Elements[container] {
		key := e.Key
		var fe udpFrontend
		if len(key) == 4 {
			a, err := netip.ParseAddr(key[0])
			if err != nil {
				continue
			}
			fe.addr, key = a, key[1:]
		}
		if len(key) != 3 || key[0] != "udp" || len(e.Value) != 2 {
			continue
		}
		p, err1 := strconv.ParseUint(key[1], 10, 16)
		epAddr, err2 := netip.ParseAddr(e.Value[0])
		epPort, err3 := strconv.ParseUint(e.Value[1], 10, 16)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		fe.port = uint16(p)
		if out[fe] == nil {
			out[fe] = map[netip.AddrPort]bool{}
		}
		out[fe][netip.AddrPortFrom(epAddr, uint16(epPort))] = true
	}
	return out
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
