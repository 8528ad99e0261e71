package dataplane

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/knftables"
)

// ipFamily names the per-family halves of the ruleset. nftables set and map
// keys have one fixed type, so every address-keyed container exists once for
// IPv4 ("4", matched with "ip") and once for IPv6 ("6", "ip6").
type ipFamily struct {
	n  string // suffix of container and chain names
	ip string // nft payload protocol: ip or ip6
}

var families = [2]ipFamily{{n: "4", ip: "ip"}, {n: "6", ip: "ip6"}}

func familyOf(v6 bool) ipFamily {
	if v6 {
		return families[1]
	}
	return families[0]
}

// Container names, per family. No element of a per-Service container
// names a chain (see pickKind and doc.go): an element that jumps or goes to
// a chain makes the kernel validate the whole table when the transaction
// adding it commits.
func (f ipFamily) nodePortIPs() string { return "nodeport-ips" + f.n }
func (f ipFamily) ep() string          { return "ep" + f.n }
func (f ipFamily) npEp() string        { return "npep" + f.n }
func (f ipFamily) aff() string         { return "aff" + f.n }
func (f ipFamily) affSvc() string      { return "affsvc" + f.n }
func (f ipFamily) affNP() string       { return "affnp" + f.n }
func (f ipFamily) masq() string        { return "masq" + f.n }
func (f ipFamily) masqPod() string     { return "masqpod" + f.n }
func (f ipFamily) masqNP() string      { return "masqnp" + f.n }
func (f ipFamily) block() string       { return "block" + f.n }
func (f ipFamily) blockDrop() string   { return "blockdrop" + f.n }
func (f ipFamily) blockNP() string     { return "blocknp" + f.n }
func (f ipFamily) blockNPDrop() string { return "blocknpdrop" + f.n }
func (f ipFamily) fw() string          { return "fw" + f.n }
func (f ipFamily) fwAllow() string     { return "fwallow" + f.n }
func (f ipFamily) hairpin() string     { return "hairpin" + f.n }
func (f ipFamily) podCIDRs() string    { return "podcidrs" + f.n }

// Endpoint maps for pods reaching an external frontend of an
// externalTrafficPolicy Local Service, which kube-proxy sends to every
// endpoint rather than only this node's (see LocalDetector).
func (f ipFamily) podEp() string   { return "podep" + f.n }
func (f ipFamily) podNpEp() string { return "podnpep" + f.n }

// Chain names that depend on data: endpoint counts and affinity timeouts.
func (f ipFamily) pickChain(n int) string      { return fmt.Sprintf("pick%s-%d", f.n, n) }
func (f ipFamily) npPickChain(n int) string    { return fmt.Sprintf("nppick%s-%d", f.n, n) }
func (f ipFamily) podPickChain(n int) string   { return fmt.Sprintf("podpick%s-%d", f.n, n) }
func (f ipFamily) podNPPickChain(n int) string { return fmt.Sprintf("podnppick%s-%d", f.n, n) }
func (f ipFamily) affRecordChain(t int32) string {
	return fmt.Sprintf("affrec%s-%d", f.n, t)
}
func (f ipFamily) masqUnlessPod() string { return "masq-unless-pod" + f.n }
func (f ipFamily) blocked() string       { return "blocked" + f.n }
func (f ipFamily) blockedNP() string     { return "blockednp" + f.n }

// pickKind is one of the four ways a new connection reaches a pick chain:
// to an address (ClusterIP, LB IP, external IP) or to a NodePort, from
// anyone or, for the pod bypass of addPodBypass, from a pod of this node.
//
// Which pick chain serves a frontend is data that changes with every
// endpoint count change, and must not be a verdict (goto pick4-3) in a map
// element: adding such an element makes the kernel validate the whole
// table, every element of every verdict map, at commit. So the frontend is
// an element of a plain set per endpoint count (svc4-3), and the static
// rule "@svc4-3 goto pick4-3" holds the verdict. A gate set of all the
// kind's frontends (svc4) keeps traffic to no Service at one lookup, as one
// verdict map was; a frontend with N endpoints costs N more, once per
// connection (the NAT chains see only its first packet). Counts beyond
// PrecreatedPickChains, rare and given a chain of their own on first use,
// are in a verdict map after the precreated counts (svcmore4).
type pickKind struct{ nodePort, fromPod bool }

// pickKinds in the order the services chain looks them up: the pod bypass
// first (see addSkeleton).
var pickKinds = [4]pickKind{{false, true}, {true, true}, {false, false}, {true, false}}

func (k pickKind) prefix() string {
	return pick(k.fromPod, "pod", "") + pick(k.nodePort, "np", "svc")
}

// gate is the set of every frontend of the kind with usable endpoints.
func (f ipFamily) gate(k pickKind) string { return k.prefix() + f.n }

// countSet holds the frontends with n usable endpoints, n up to
// PrecreatedPickChains.
func (f ipFamily) countSet(k pickKind, n int) string {
	return fmt.Sprintf("%s%s-%d", k.prefix(), f.n, n)
}

// more maps the frontends with more endpoints than PrecreatedPickChains to
// their pick chain.
func (f ipFamily) more(k pickKind) string { return k.prefix() + "more" + f.n }

// dispatch is the chain of countSet lookups.
func (f ipFamily) dispatch(k pickKind) string {
	return pick(k.fromPod, "pod", "") + pick(k.nodePort, "np", "") + "pick" + f.n
}

func (f ipFamily) pickChainOf(k pickKind, n int) string {
	switch k {
	case pickKind{nodePort: true}:
		return f.npPickChain(n)
	case pickKind{fromPod: true}:
		return f.podPickChain(n)
	case pickKind{nodePort: true, fromPod: true}:
		return f.podNPPickChain(n)
	}
	return f.pickChain(n)
}

func (f ipFamily) epMapOf(k pickKind) string {
	switch k {
	case pickKind{nodePort: true}:
		return f.npEp()
	case pickKind{fromPod: true}:
		return f.podEp()
	case pickKind{nodePort: true, fromPod: true}:
		return f.podNpEp()
	}
	return f.ep()
}

// match is the expression a frontend of the kind is looked up by, pre-NAT.
func (f ipFamily) match(k pickKind) string { return pick(k.nodePort, keyPort, f.keyIP()) }

// gateRule sends the kind's frontends to their dispatch chain.
func (f ipFamily) gateRule(k pickKind) string {
	return fmt.Sprintf("%s%s @%s goto %s", f.nodePortGuard(k.nodePort), f.match(k), f.gate(k), f.dispatch(k))
}

// nodePortGuard restricts a NodePort rule to the node's NodePort addresses.
func (f ipFamily) nodePortGuard(nodePort bool) string {
	return pick(nodePort, fmt.Sprintf("%s daddr @%s ", f.ip, f.nodePortIPs()), "")
}

// dispatchRules are the dispatch chain's: one set lookup per precreated
// endpoint count, then the verdict map of larger counts.
func (f ipFamily) dispatchRules(k pickKind) []string {
	rules := make([]string, 0, PrecreatedPickChains+1)
	for n := 1; n <= PrecreatedPickChains; n++ {
		rules = append(rules, fmt.Sprintf("%s @%s goto %s", f.match(k), f.countSet(k, n), f.pickChainOf(k, n)))
	}
	return append(rules, fmt.Sprintf("%s vmap @%s", f.match(k), f.more(k)))
}

// affRecordRule remembers, for timeout seconds, which endpoint a new
// connection was sent to.
func (f ipFamily) affRecordRule(timeout int32) string {
	return fmt.Sprintf("%s update @%s { %s saddr . %s timeout %ds : %s daddr . th dport }",
		l4, f.aff(), f.ip, f.keyOrigIP(), timeout, f.ip)
}

const (
	chainServices = "services"
	chainFirewall = "firewall"
	chainBlock    = "block"
	chainAffinity = "affinity"
	chainReject   = "reject-packet"

	verdictReject = "goto " + chainReject

	// l4 guards every rule that reads ports: nft needs a transport protocol
	// match before "th dport"/"ct original proto-dst" can be typed or dnat can
	// set a port.
	l4 = "meta l4proto { tcp, udp, sctp }"
)

// frontend expressions, pre-NAT (the packet as sent) and post-NAT (the
// connection's original direction, from conntrack).
func (f ipFamily) keyIP() string { return f.ip + " daddr . meta l4proto . th dport" }
func (f ipFamily) keyOrigIP() string {
	return "ct original " + f.ip + " daddr . meta l4proto . ct original proto-dst"
}

const keyPort = "meta l4proto . th dport"
const keyOrigPort = "meta l4proto . ct original proto-dst"

// addSkeleton adds the fixed part of the ruleset: base chains, the chains they
// jump to, and every set and map. None of it depends on the number of services.
func addSkeleton(r *Ruleset, opts Options) {
	size := opts.AffinityMapSize
	if size == 0 {
		size = 65536
	}
	for _, f := range families {
		addFamilyContainers(r, f, size, opts.Local.match(f) != "")
	}
	r.addBaseChain("nat-prerouting", knftables.NATType, knftables.PreroutingHook, knftables.DNATPriority, "jump "+chainServices)
	r.addBaseChain("nat-output", knftables.NATType, knftables.OutputHook, knftables.DNATPriority, "jump "+chainServices)
	r.addBaseChain("nat-postrouting", knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority, postroutingRules(opts)...)
	r.addBaseChain("fw-prerouting", knftables.FilterType, knftables.PreroutingHook, knftables.DNATPriority+"-10", "jump "+chainFirewall)
	r.addBaseChain("fw-output", knftables.FilterType, knftables.OutputHook, knftables.DNATPriority+"-10", "jump "+chainFirewall)
	r.addBaseChain("affinity-prerouting", knftables.FilterType, knftables.PreroutingHook, knftables.DNATPriority+"+10", "jump "+chainAffinity)
	r.addBaseChain("affinity-output", knftables.FilterType, knftables.OutputHook, knftables.DNATPriority+"+10", "jump "+chainAffinity)
	for _, h := range []knftables.BaseChainHook{knftables.InputHook, knftables.ForwardHook, knftables.OutputHook} {
		r.addBaseChain("filter-"+string(h), knftables.FilterType, h, knftables.FilterPriority, "jump "+chainBlock)
	}

	var services, firewall, block, affinity []string
	for _, f := range families {
		// A remembered ClientIP choice wins; dnat ends the chain. A miss
		// (no element) makes the rule not match and evaluation goes on.
		services = append(services,
			fmt.Sprintf("%s dnat %s to %s saddr . %s map @%s", l4, f.ip, f.ip, f.keyIP(), f.aff()))
	}
	for _, f := range families {
		local := opts.Local.match(f)
		services = append(services, addPickRules(r, f, local)...)
		firewall = append(firewall, fmt.Sprintf("%s @%s %s . %s saddr != @%s drop",
			f.keyIP(), f.fw(), f.keyIP(), f.ip, f.fwAllow()))
		block = append(block, addBlockRules(r, f, opts.ServiceCIDRs)...)
		// Affinity elements are verdicts (goto affrec4-T), the exception to
		// verdict-free per-Service elements: one changes only when its
		// Service gains or loses affinity or all endpoints, not with an
		// endpoint count, and the validation it causes walks the verdict
		// maps, which hold only the affinity Services and those beyond
		// PrecreatedPickChains endpoints.
		affinity = append(affinity,
			fmt.Sprintf("ct state new ct status dnat %s %s vmap @%s", l4, f.keyOrigIP(), f.affSvc()),
			fmt.Sprintf("ct state new ct status dnat %s ct original %s daddr @%s %s vmap @%s",
				l4, f.ip, f.nodePortIPs(), keyOrigPort, f.affNP()))
		if local != "" {
			r.addChain(f.masqUnlessPod(), local+" return", "masquerade")
		}
	}
	r.addChain(chainServices, services...)
	r.addChain(chainFirewall, firewall...)
	r.addChain(chainBlock, block...)
	r.addChain(chainAffinity, affinity...)
	r.addChain(chainReject, "meta l4proto tcp reject with tcp reset", "reject")
	// Not used by any rule: its one element's comment records which
	// skeleton nft wrote, for a later full sync or a restarted agent to
	// reload elements only (see Applier.reload).
	r.addSet(stampSet, "meta mark")
}

// addPickRules adds the family's pick chains of set lookups (see pickKind)
// and returns the services chain's rules that lead there.
func addPickRules(r *Ruleset, f ipFamily, local string) []string {
	var services []string
	for _, k := range pickKinds {
		switch {
		case k.fromPod && local == "":
			continue
		case k.fromPod:
			// Before the frontends' own sets, so that a pod reaching an
			// externalTrafficPolicy Local frontend gets every endpoint:
			// its address survives to the endpoint on any node, and it
			// should not be dropped when this node has no endpoint.
			services = append(services, local+" "+f.gateRule(k))
		default:
			services = append(services, f.gateRule(k))
		}
		r.addChain(f.dispatch(k), f.dispatchRules(k)...)
	}
	return services
}

// addBlockRules adds the chains that turn away traffic to frontends
// without usable endpoints and returns the block chain's rules.
func addBlockRules(r *Ruleset, f ipFamily, serviceCIDRs []netip.Prefix) []string {
	// Every packet crosses the block chain's hooks: a frontend not
	// blocked costs one lookup; the blocked ones are rejected unless
	// listed for drop.
	block := []string{
		fmt.Sprintf("%s @%s goto %s", f.keyIP(), f.block(), f.blocked()),
		fmt.Sprintf("%s%s @%s goto %s", f.nodePortGuard(true), keyPort, f.blockNP(), f.blockedNP()),
	}
	r.addChain(f.blocked(), fmt.Sprintf("%s @%s drop", f.keyIP(), f.blockDrop()), verdictReject)
	r.addChain(f.blockedNP(), fmt.Sprintf("%s @%s drop", keyPort, f.blockNPDrop()), verdictReject)
	// A forwarded ClusterIP was DNATed before this hook, so what still
	// has a Service address here is forwarded by no Service port. The
	// ranges are written into the rule, as kube-proxy does: they change
	// about never, and a rule change costs one full sync.
	if cidrs := familyCIDRs(serviceCIDRs, f); cidrs != "" {
		block = append(block, fmt.Sprintf("ct state new %s daddr { %s } %s", f.ip, cidrs, verdictReject))
	}
	return block
}

// stampSet holds the applier's stamp; reloads leave it alone.
const stampSet = "stamp"

// postroutingRules masquerade after the routing decision. The decision is
// re-derived from conntrack's original tuple instead of a packet mark, so herald
// claims no mark bits that a CNI or policy routing may be using.
func postroutingRules(opts Options) []string {
	var rules []string
	for _, f := range families {
		origNP := fmt.Sprintf("ct original %s daddr @%s %s", f.ip, f.nodePortIPs(), keyOrigPort)
		rules = append(rules,
			// hairpin: a pod reached itself through a service; without SNAT
			// it would see its own address as the peer and drop the reply.
			fmt.Sprintf("ct status dnat %s saddr . %s daddr @%s masquerade", f.ip, f.ip, f.hairpin()),
			fmt.Sprintf("ct status dnat %s %s @%s masquerade", l4, f.keyOrigIP(), f.masq()),
			fmt.Sprintf("ct status dnat %s %s @%s masquerade", l4, origNP, f.masqNP()))
		if opts.Local.match(f) != "" {
			rules = append(rules, fmt.Sprintf("ct status dnat %s %s @%s goto %s", l4, f.keyOrigIP(), f.masqPod(), f.masqUnlessPod()))
		}
	}
	return rules
}

func addFamilyContainers(r *Ruleset, f ipFamily, affSize uint64, local bool) {
	ipKey := f.ip + " daddr . meta l4proto . th dport"
	// nft 1.0.6 (Debian 12) cannot add a rule that names a map whose data
	// typeof has "th dport" unless the map is created in the same
	// transaction ("conflicting protocols specified: tcp vs. th"); no other
	// spelling of address . port is accepted at all. So rules naming these
	// maps are only ever written by a full sync, which recreates the table.
	target := f.ip + " daddr . th dport"
	r.addSet(f.nodePortIPs(), f.ip+" daddr")
	for _, k := range pickKinds {
		if k.fromPod && !local {
			continue
		}
		key := pick(k.nodePort, keyPort, ipKey)
		r.addSet(f.gate(k), key)
		for n := 1; n <= PrecreatedPickChains; n++ {
			r.addSet(f.countSet(k, n), key)
		}
		r.addMap(f.more(k), key+" : verdict")
		// numgen's width is fixed whatever the modulus, so "mod 2" in the
		// type serves every endpoint count.
		r.addMap(f.epMapOf(k), key+" . numgen random mod 2 : "+target)
	}
	r.addDynamicMap(f.aff(), f.ip+" saddr . "+ipKey+" : "+target, affSize, 3*time.Hour)
	r.addMap(f.affSvc(), ipKey+" : verdict")
	r.addMap(f.affNP(), keyPort+" : verdict")
	r.addSet(f.masq(), ipKey)
	r.addSet(f.masqNP(), keyPort)
	if local {
		r.addSet(f.masqPod(), ipKey)
	}
	r.addSet(f.block(), ipKey)
	r.addSet(f.blockDrop(), ipKey)
	r.addSet(f.blockNP(), keyPort)
	r.addSet(f.blockNPDrop(), keyPort)
	r.addSet(f.fw(), ipKey)
	r.addSet(f.fwAllow(), ipKey+" . "+f.ip+" saddr", knftables.IntervalFlag)
	r.addSet(f.hairpin(), f.ip+" saddr . "+f.ip+" daddr")
	r.addSet(f.podCIDRs(), f.ip+" saddr", knftables.IntervalFlag)
}

// familyCIDRs lists the prefixes of one family, sorted, as nft set text.
func familyCIDRs(prefixes []netip.Prefix, f ipFamily) string {
	var out []string
	for _, p := range prefixes {
		if p.Addr().Is6() == (f == families[1]) {
			out = append(out, p.Masked().String())
		}
	}
	slices.Sort(out)
	return strings.Join(slices.Compact(out), ", ")
}
