package dataplane

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// addFrontend writes one frontend's elements: where it goes (svc/np verdict
// maps and the endpoint maps), whether it is masqueraded, remembered for
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
		verdict := verdictReject
		if localOnly && len(usable(p.eps, false)) > 0 {
			verdict = verdictDrop
		}
		b.r.addElement(pick(fe.nodePort, f.blockNP(), f.block()), Element{Key: key, Value: []string{verdict}, Comment: p.name})
		return
	}

	b.r.addElement(pick(fe.nodePort, f.np(), f.svc()), Element{
		Key: key, Value: []string{"goto " + b.pickChain(f, fe.nodePort, false, len(sel))}, Comment: p.name,
	})
	b.addEndpoints(f, pick(fe.nodePort, f.npEp(), f.ep()), key, sel)
	if v := b.masqVerdict(f, fe, localOnly); v != "" {
		b.r.addElement(pick(fe.nodePort, f.masqNP(), f.masq()), Element{Key: key, Value: []string{v}})
	}
	if p.affinity > 0 {
		b.addAffinity(f, fe, p.affinity, sel)
	}
}

// addEndpoints lists sel in epMap under the frontend key, in the order the
// pick chain's numgen indexes them.
func (b *builder) addEndpoints(f ipFamily, epMap string, key []string, sel []endpoint) {
	for i, e := range sel {
		b.r.addElement(epMap, Element{
			Key:   append(key[:len(key):len(key)], strconv.Itoa(i)),
			Value: []string{e.addr.String(), strconv.Itoa(int(e.port))},
		})
		if e.local {
			b.r.addElement(f.hairpin(), Element{Key: []string{e.addr.String(), e.addr.String()}})
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
	key := fe.key()
	b.r.addElement(pick(fe.nodePort, f.podNP(), f.podSvc()), Element{
		Key: key, Value: []string{"goto " + b.pickChain(f, fe.nodePort, true, len(all))}, Comment: p.name,
	})
	b.addEndpoints(f, pick(fe.nodePort, f.podNpEp(), f.podEp()), key, all)
	if p.affinity > 0 {
		// The choice is remembered under the same frontend key; listing
		// every endpoint keeps the purge after a sync from taking it for
		// stale.
		b.addAffinity(f, fe, p.affinity, all)
	}
}

// masqVerdict says how connections to fe are source-NATed. External traffic
// under policy Cluster may be sent to another node, whose reply must come back
// here to be un-DNATed; under policy Local the client address is kept.
func (b *builder) masqVerdict(f ipFamily, fe frontend, localOnly bool) string {
	switch {
	case fe.external && !localOnly:
		return verdictMasq
	case fe.external:
		return ""
	case b.opts.MasqueradeAll:
		return verdictMasq
	case b.localDetected(f):
		return "goto " + f.masqUnlessPod()
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
		b.r.addChain(chain, fmt.Sprintf("%s update @%s { %s saddr . %s timeout %ds : %s daddr . th dport }",
			l4, f.aff(), f.ip, f.keyOrigIP(), timeout, f.ip))
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
// fromPod picks from the endpoint maps of addPodBypass.
func (b *builder) pickChain(f ipFamily, nodePort, fromPod bool, n int) string {
	name, key, m := f.pickChain(n), f.keyIP(), f.ep()
	switch {
	case nodePort && fromPod:
		name, key, m = f.podNPPickChain(n), keyPort, f.podNpEp()
	case nodePort:
		name, key, m = f.npPickChain(n), keyPort, f.npEp()
	case fromPod:
		name, m = f.podPickChain(n), f.podEp()
	}
	if _, ok := b.r.Chains[name]; !ok {
		b.r.addChain(name, fmt.Sprintf("%s dnat %s to %s . numgen random mod %d map @%s", l4, f.ip, key, n, m))
	}
	return name
}

func pick[T any](cond bool, a, b T) T {
	if cond {
		return a
	}
	return b
}
