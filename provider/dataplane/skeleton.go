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

// Container names, per family.
func (f ipFamily) nodePortIPs() string { return "nodeport-ips" + f.n }
func (f ipFamily) svc() string         { return "svc" + f.n }
func (f ipFamily) np() string          { return "np" + f.n }
func (f ipFamily) ep() string          { return "ep" + f.n }
func (f ipFamily) npEp() string        { return "npep" + f.n }
func (f ipFamily) aff() string         { return "aff" + f.n }
func (f ipFamily) affSvc() string      { return "affsvc" + f.n }
func (f ipFamily) affNP() string       { return "affnp" + f.n }
func (f ipFamily) masq() string        { return "masq" + f.n }
func (f ipFamily) masqNP() string      { return "masqnp" + f.n }
func (f ipFamily) block() string       { return "block" + f.n }
func (f ipFamily) blockNP() string     { return "blocknp" + f.n }
func (f ipFamily) fw() string          { return "fw" + f.n }
func (f ipFamily) fwAllow() string     { return "fwallow" + f.n }
func (f ipFamily) hairpin() string     { return "hairpin" + f.n }
func (f ipFamily) podCIDRs() string    { return "podcidrs" + f.n }

// Their counterparts for pods reaching an external frontend of an
// externalTrafficPolicy Local Service, which kube-proxy sends to every
// endpoint rather than only this node's (see LocalDetector).
func (f ipFamily) podSvc() string  { return "podsvc" + f.n }
func (f ipFamily) podNP() string   { return "podnp" + f.n }
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

const (
	chainServices = "services"
	chainFirewall = "firewall"
	chainBlock    = "block"
	chainAffinity = "affinity"
	chainMasq     = "do-masquerade"
	chainReject   = "reject-packet"

	verdictDrop   = "drop"
	verdictReject = "goto " + chainReject
	verdictMasq   = "goto " + chainMasq

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
		addFamilyContainers(r, f, size)
	}
	r.addBaseChain("nat-prerouting", knftables.NATType, knftables.PreroutingHook, knftables.DNATPriority, "jump "+chainServices)
	r.addBaseChain("nat-output", knftables.NATType, knftables.OutputHook, knftables.DNATPriority, "jump "+chainServices)
	r.addBaseChain("nat-postrouting", knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority, postroutingRules()...)
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
		if local != "" {
			// Before the frontends' own maps, so that a pod reaching an
			// externalTrafficPolicy Local frontend gets every endpoint:
			// its address survives to the endpoint on any node, and it
			// should not be dropped when this node has no endpoint.
			services = append(services,
				fmt.Sprintf("%s %s vmap @%s", local, f.keyIP(), f.podSvc()),
				fmt.Sprintf("%s %s daddr @%s %s vmap @%s", local, f.ip, f.nodePortIPs(), keyPort, f.podNP()))
		}
		services = append(services,
			fmt.Sprintf("%s vmap @%s", f.keyIP(), f.svc()),
			fmt.Sprintf("%s daddr @%s %s vmap @%s", f.ip, f.nodePortIPs(), keyPort, f.np()))
		firewall = append(firewall, fmt.Sprintf("%s @%s %s . %s saddr != @%s drop",
			f.keyIP(), f.fw(), f.keyIP(), f.ip, f.fwAllow()))
		block = append(block,
			fmt.Sprintf("%s vmap @%s", f.keyIP(), f.block()),
			fmt.Sprintf("%s daddr @%s %s vmap @%s", f.ip, f.nodePortIPs(), keyPort, f.blockNP()))
		// A forwarded ClusterIP was DNATed before this hook, so what still
		// has a Service address here is forwarded by no Service port. The
		// ranges are written into the rule, as kube-proxy does: they change
		// about never, and a rule change costs one full sync.
		if cidrs := familyCIDRs(opts.ServiceCIDRs, f); cidrs != "" {
			block = append(block, fmt.Sprintf("ct state new %s daddr { %s } %s", f.ip, cidrs, verdictReject))
		}
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
	r.addChain(chainMasq, "masquerade")
	r.addChain(chainReject, "meta l4proto tcp reject with tcp reset", "reject")
	// Not used by any rule: its one element's comment records which
	// skeleton nft wrote, for a later full sync or a restarted agent to
	// reload elements only (see Applier.reload).
	r.addSet(stampSet, "meta mark")
}

// stampSet holds the applier's stamp; reloads leave it alone.
const stampSet = "stamp"

// postroutingRules masquerade after the routing decision. The decision is
// re-derived from conntrack's original tuple instead of a packet mark, so herald
// claims no mark bits that a CNI or policy routing may be using.
func postroutingRules() []string {
	var rules []string
	for _, f := range families {
		rules = append(rules,
			// hairpin: a pod reached itself through a service; without SNAT
			// it would see its own address as the peer and drop the reply.
			fmt.Sprintf("ct status dnat %s saddr . %s daddr @%s masquerade", f.ip, f.ip, f.hairpin()),
			fmt.Sprintf("ct status dnat %s %s vmap @%s", l4, f.keyOrigIP(), f.masq()),
			fmt.Sprintf("ct status dnat %s ct original %s daddr @%s %s vmap @%s",
				l4, f.ip, f.nodePortIPs(), keyOrigPort, f.masqNP()))
	}
	return rules
}

func addFamilyContainers(r *Ruleset, f ipFamily, affSize uint64) {
	ipKey := f.ip + " daddr . meta l4proto . th dport"
	// nft 1.0.6 (Debian 12) cannot add a rule that names a map whose data
	// typeof has "th dport" unless the map is created in the same
	// transaction ("conflicting protocols specified: tcp vs. th"); no other
	// spelling of address . port is accepted at all. So rules naming these
	// maps are only ever written by a full sync, which recreates the table.
	target := f.ip + " daddr . th dport"
	r.addSet(f.nodePortIPs(), f.ip+" daddr")
	r.addMap(f.svc(), ipKey+" : verdict")
	r.addMap(f.np(), keyPort+" : verdict")
	// numgen's width is fixed whatever the modulus, so "mod 2" in the type
	// serves every endpoint count.
	r.addMap(f.ep(), ipKey+" . numgen random mod 2 : "+target)
	r.addMap(f.npEp(), keyPort+" . numgen random mod 2 : "+target)
	r.addMap(f.podSvc(), ipKey+" : verdict")
	r.addMap(f.podNP(), keyPort+" : verdict")
	r.addMap(f.podEp(), ipKey+" . numgen random mod 2 : "+target)
	r.addMap(f.podNpEp(), keyPort+" . numgen random mod 2 : "+target)
	r.addDynamicMap(f.aff(), f.ip+" saddr . "+ipKey+" : "+target, affSize, 3*time.Hour)
	r.addMap(f.affSvc(), ipKey+" : verdict")
	r.addMap(f.affNP(), keyPort+" : verdict")
	r.addMap(f.masq(), ipKey+" : verdict")
	r.addMap(f.masqNP(), keyPort+" : verdict")
	r.addMap(f.block(), ipKey+" : verdict")
	r.addMap(f.blockNP(), keyPort+" : verdict")
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
