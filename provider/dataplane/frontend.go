package dataplane

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// addFrontend writes one frontend's elements: where it goes (the pick
// sets and the endpoint maps), whether it is masqueraded, remembered for
// affinity, fenced by source ranges, or blocked.
func (b *builder) addFrontend(f ipFamily, fe frontend, p svcPlan) {
	key := fe.key()
	localOnly := (fe.external && p.etpLocal) || (!fe.external && p.itpLocal)
	if fe.lb && len(p.ranges) > 0 {
		b.addSourceRanges(f, key, p.ranges)
	}
	if fe.external && localOnly {
		b.addPodBypass(f, fe, p)
	}
	sel := usable(p.eps, localOnly)
	if len(sel) == 0 {
		// Nothing anywhere: tell the client at once (reset/unreachable). Only
		// remote endpoints under a Local policy: drop, as kube-proxy does, so
		// the client retries rather than failing hard.
		b.r.addElement(pick(fe.nodePort, f.blockNP(), f.block()), Element{Key: key, Comment: p.name})
		if localOnly && len(usable(p.eps, false)) > 0 {
			b.r.addElement(pick(fe.nodePort, f.blockNPDrop(), f.blockDrop()), Element{Key: key})
		}
		return
	}

	b.addPick(f, pickKind{nodePort: fe.nodePort}, key, sel, p.name)
	if set := b.masqSet(f, fe, localOnly); set != "" {
		b.r.addElement(set, Element{Key: key})
	}
	if p.affinity > 0 {
		b.addAffinity(f, fe, p.affinity, sel)
	}
}

// addPick makes new connections to the frontend key pick one of sel: the
// key goes into the kind's gate and the set of its endpoint count (or, past
// the precreated counts, the verdict map of larger ones), and sel into the
// kind's endpoint map.
func (b *builder) addPick(f ipFamily, k pickKind, key []string, sel []endpoint, name string) {
	n := len(sel)
	b.r.addElement(f.gate(k), Element{Key: key})
	if n <= PrecreatedPickChains {
		b.r.addElement(f.countSet(k, n), Element{Key: key, Comment: name})
	} else {
		b.r.addElement(f.more(k), Element{Key: key, Value: []string{"goto " + b.pickChain(f, k, n)}, Comment: name})
	}
	b.addEndpoints(f, f.epMapOf(k), key, sel)
}

// addEndpoints lists sel in epMap under the frontend key, in the order the
// pick chain's numgen indexes them.
func (b *builder) addEndpoints(f ipFamily, epMap string, key []string, sel []endpoint) {
	for i, e := range sel {
		addr := e.addr.String() // one string for the three places it goes
		b.r.addElement(epMap, Element{
			Key:   append(key[:len(key):len(key)], strconv.Itoa(i)),
			Value: []string{addr, strconv.Itoa(int(e.port))},
		})
		if e.local {
			b.r.addElement(f.hairpin(), Element{Key: []string{addr, addr}})
		}
	}
}

// addPodBypass sends pods of this node that reach an external frontend of
// an externalTrafficPolicy Local Service to every usable endpoint, as
// kube-proxy does. The policy keeps an external client's address by never
// leaving the node; a pod's address survives the trip to any node anyway,
// and without this a pod on a node with no endpoint of the Service could
// not reach its load balancer address at all. Nothing is masqueraded.
// Frontends with no endpoint anywhere get nothing here: the block map
// rejects them for pods as for everyone.
func (b *builder) addPodBypass(f ipFamily, fe frontend, p svcPlan) {
	if !b.localDetected(f) {
		return
	}
	all := usable(p.eps, false)
	if len(all) == 0 {
		return
	}
	b.addPick(f, pickKind{nodePort: fe.nodePort, fromPod: true}, fe.key(), all, p.name)
	if p.affinity > 0 {
		// The choice is remembered under the same frontend key; listing
		// every endpoint keeps the purge after a sync from taking it for
		// stale.
		b.addAffinity(f, fe, p.affinity, all)
	}
}

// masqSet says in which set fe is to be source-NATed, if at all. External
// traffic under policy Cluster may be sent to another node, whose reply must
// come back here to be un-DNATed; under policy Local the client address is
// kept.
func (b *builder) masqSet(f ipFamily, fe frontend, localOnly bool) string {
	switch {
	case fe.external && !localOnly:
		return pick(fe.nodePort, f.masqNP(), f.masq())
	case fe.external:
		return ""
	case b.opts.MasqueradeAll:
		return f.masq()
	case b.localDetected(f):
		return f.masqPod()
	}
	return ""
}

// localDetected reads Options rather than the skeleton, so that a Builder
// can build one Service on its own. Without detection ClusterIP traffic is
// not masqueraded, as in kube-proxy: masquerading everything would hide
// every pod's address.
func (b *builder) localDetected(f ipFamily) bool { return b.opts.Local.match(f) != "" }

func (b *builder) addSourceRanges(f ipFamily, key []string, ranges []netip.Prefix) {
	b.r.addElement(f.fw(), Element{Key: key})
	for _, p := range ranges {
		if p.Addr().Is6() != (f.n == "6") {
			continue
		}
		b.r.addElement(f.fwAllow(), Element{Key: append(key[:len(key):len(key)], p.String())})
	}
}

// addAffinity makes the post-NAT affinity chain record the chosen endpoint for
// fe, and lists what a remembered choice may still point at.
func (b *builder) addAffinity(f ipFamily, fe frontend, timeout int32, sel []endpoint) {
	chain := f.affRecordChain(timeout)
	if _, ok := b.r.Chains[chain]; !ok {
		b.r.addChain(chain, f.affRecordRule(timeout))
	}
	key := fe.key()
	b.r.addElement(pick(fe.nodePort, f.affNP(), f.affSvc()), Element{Key: key, Value: []string{"goto " + chain}})

	valid := b.r.Affinity[f.n]
	if valid == nil {
		valid = map[string]bool{}
		b.r.Affinity[f.n] = valid
	}
	addrs := []string{fe.addr.String()}
	if fe.nodePort {
		addrs = addrs[:0]
		for _, ip := range b.nodePortIPs[f.n] {
			addrs = append(addrs, ip.String())
		}
	}
	for _, a := range addrs {
		for _, e := range sel {
			valid[affinityKey(a, fe.proto, strconv.Itoa(int(fe.port)), e.addr.String(), strconv.Itoa(int(e.port)))] = true
		}
	}
}

// affinityKey identifies a (frontend, endpoint) pair an affinity entry may hold.
func affinityKey(daddr, proto, port, epAddr, epPort string) string {
	return strings.Join([]string{daddr, proto, port, epAddr, epPort}, " ")
}

// pickChain returns (and creates on first use) the chain that picks one of n
// endpoints at random. There is one such chain per endpoint count in use, not
// per service: numgen's modulus must be a constant, the endpoint map does the rest.
func (b *builder) pickChain(f ipFamily, k pickKind, n int) string {
	name := f.pickChainOf(k, n)
	if _, ok := b.r.Chains[name]; !ok {
		b.r.addChain(name, fmt.Sprintf("%s dnat %s to %s . numgen random mod %d map @%s", l4, f.ip, f.match(k), n, f.epMapOf(k)))
	}
	return name
}

func pick[T any](cond bool, a, b T) T {
	if cond {
		return a
	}
	return b
}
