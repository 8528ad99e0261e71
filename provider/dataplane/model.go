package dataplane

import (
	"net/netip"
	"strings"
	"time"

	"sigs.k8s.io/knftables"
)

// TableName is the nftables table herald owns alone, in family inet so that one
// table carries both IPv4 and IPv6 rules.
const TableName = "herald"

// TableFamily is the family of TableName.
const TableFamily = knftables.InetFamily

// Node is what the builder needs to know about the node it runs on.
type Node struct {
	// Name matches EndpointSlice endpoints' nodeName to find local endpoints.
	Name string
	// IPs are the node's addresses; NodePorts answer on those that
	// Options.NodePortCIDRs lets through.
	IPs []netip.Addr
	// Zone is the node's topology.kubernetes.io/zone label, matched
	// against endpoints' zone hints (see usable).
	Zone string
}

// Options tune the ruleset. The zero value is usable.
type Options struct {
	// NodePortCIDRs narrows the node addresses that answer NodePorts
	// (kube-proxy's --nodeport-addresses). Empty means every node IP.
	NodePortCIDRs []netip.Prefix
	// Local tells traffic from pods apart from the rest (kube-proxy's
	// --detect-local-mode). Where it can, traffic to a ClusterIP from
	// anything else (the node itself, another node, an off-cluster router)
	// is masqueraded so that replies come back through this node, and pods
	// reaching an external frontend of an externalTrafficPolicy Local
	// Service are sent to all its endpoints, as if the policy were Cluster.
	// The zero value detects nothing: neither happens.
	Local LocalDetector
	// MasqueradeAll masquerades every connection to a ClusterIP.
	MasqueradeAll bool
	// ServiceCIDRs are the cluster's Service ranges (its ServiceCIDR
	// objects). A new connection to an address in them that no Service
	// port forwards (an unallocated ClusterIP, or a port the ClusterIP's
	// Service lacks) is rejected at once, rather than routed off the node
	// to time out.
	ServiceCIDRs []netip.Prefix
	// AffinityMapSize bounds each dynamic ClientIP-affinity map; 0 means 65536.
	AffinityMapSize uint64
}

// Ruleset is the complete desired content of the herald table, as plain data.
// The applier turns it into one transaction (full sync) or into the difference
// against the last applied Ruleset (partial sync).
type Ruleset struct {
	Chains map[string]*Chain
	Sets   map[string]*knftables.Set
	Maps   map[string]*knftables.Map
	// Elements holds the elements of every set and map, by set/map name.
	Elements map[string]Elements
	// Affinity lists, per family ("4"/"6") and frontend, the endpoints a
	// remembered ClientIP choice may still point at. The applier uses it to
	// purge affinity entries that refer to endpoints which went away; they are
	// written by the packet path, so they are not part of Elements.
	Affinity map[string]map[string]bool

	// Set by Builder: its Rulesets share element maps that the next Build
	// updates in place, making the previous Ruleset stale; only the keys in
	// dirty may differ between base and this Ruleset, and dirty holds what
	// they were in base.
	stale bool
	base  *Ruleset
	dirty map[string]map[string]prior
}

// Chain is a chain definition and its rules in order.
type Chain struct {
	knftables.Chain
	Rules []string
}

// Element is one set or map element. Value is nil for set elements.
type Element struct {
	Key     []string
	Value   []string
	Comment string
	// by is, in a Builder's Rulesets, the share of the Service that
	// writes the element (see Builder.claim): kept here rather than in a
	// map of its own, which at 10k Services was 3 MiB.
	by *svcShare
}

// Elements are the elements of one set or map, by joined key.
type Elements map[string]Element

func (e Element) same(o Element) bool {
	return e.Comment == o.Comment && strings.Join(e.Value, " . ") == strings.Join(o.Value, " . ")
}

func newRuleset() *Ruleset {
	return &Ruleset{
		Chains:   map[string]*Chain{},
		Sets:     map[string]*knftables.Set{},
		Maps:     map[string]*knftables.Map{},
		Elements: map[string]Elements{},
		Affinity: map[string]map[string]bool{},
	}
}

func (r *Ruleset) addElement(container string, e Element) {
	if len(e.Comment) > knftables.CommentLengthMax {
		e.Comment = e.Comment[:knftables.CommentLengthMax]
	}
	els := r.Elements[container]
	if els == nil {
		els = Elements{}
		r.Elements[container] = els
	}
	els[strings.Join(e.Key, " . ")] = e
}

func (r *Ruleset) addChain(name string, rules ...string) {
	r.Chains[name] = &Chain{Chain: knftables.Chain{Name: name}, Rules: rules}
}

func (r *Ruleset) addBaseChain(name string, typ knftables.BaseChainType, hook knftables.BaseChainHook,
	prio knftables.BaseChainPriority, rules ...string) {
	r.Chains[name] = &Chain{
		Chain: knftables.Chain{Name: name, Type: &typ, Hook: &hook, Priority: &prio},
		Rules: rules,
	}
}

func (r *Ruleset) addSet(name, typeOf string, flags ...knftables.SetFlag) {
	r.Sets[name] = &knftables.Set{Name: name, TypeOf: typeOf, Flags: flags}
}

func (r *Ruleset) addMap(name, typeOf string) {
	r.Maps[name] = &knftables.Map{Name: name, TypeOf: typeOf}
}

func (r *Ruleset) addDynamicMap(name, typeOf string, size uint64, timeout time.Duration) {
	r.Maps[name] = &knftables.Map{
		Name: name, TypeOf: typeOf,
		Flags:   []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag},
		Size:    &size,
		Timeout: &timeout,
	}
}
