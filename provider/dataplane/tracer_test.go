package dataplane

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

// origin is where a traced packet starts: it decides the netfilter hooks it
// crosses (prerouting for anything arriving, output for the node's own
// processes).
type origin int

const (
	offNode  origin = iota // another host, through the node's interface
	localPod               // a pod on this node, through its veth
	hostProc               // a process in the node's network namespace
)

type packet struct {
	src, dst string
	proto    string // tcp, udp, sctp
	port     int
	from     origin
}

// traceResult is what happened to the first packet of a connection.
type traceResult struct {
	verdict    string   // "dnat", "drop", "reject", "accept" (untouched)
	endpoints  []string // DNAT candidates, "ip:port", sorted; several when picked at random
	masquerade bool
	// remembered are the entries an affinity update writes, one per DNAT
	// candidate, sorted: "MAP KEY : VALUE timeout T", KEY and VALUE as nft
	// prints concatenations.
	remembered []string
	// rejectTCPReset is set when a TCP reset, not an ICMP error, answers.
	rejectTCPReset bool
}

// tracer interprets the rules of knftables.Fake's herald table. It knows
// the statement and expression forms the builder writes and fails the test
// on anything else, so that a rule it cannot read is never silently skipped.
type tracer struct {
	t     *testing.T
	table *knftables.FakeTable
	nodes []netip.Addr
	// podIface is the interface localPod packets come in through
	// (defaultPodIface when empty); offNode ones come through uplinkIface,
	// hostProc ones through none.
	podIface string
}

const (
	defaultPodIface = "veth1a2b3c"
	uplinkIface     = "eth0"
)

// iifname is the input interface nft sees for p.
func (tr *tracer) iifname(p packet) string {
	switch p.from {
	case localPod:
		return cmp.Or(tr.podIface, defaultPodIface)
	case offNode:
		return uplinkIface
	}
	return ""
}

func newTracer(t *testing.T, fake *knftables.Fake, nodeIPs ...netip.Addr) *tracer {
	t.Helper()
	if fake.Table == nil {
		t.Fatal("no table")
	}
	return &tracer{t: t, table: fake.Table, nodes: nodeIPs}
}

// pktState is the packet as a chain sees it.
type pktState struct {
	packet
	v6      bool
	natted  bool
	target  netip.AddrPort // after DNAT
	res     *traceResult
	hookNow knftables.BaseChainHook
}

func (tr *tracer) trace(p packet) traceResult {
	tr.t.Helper()
	res := &traceResult{verdict: "accept"}
	st := &pktState{packet: p, v6: strings.Contains(p.dst, ":"), res: res}
	first := knftables.PreroutingHook
	if p.from == hostProc {
		first = knftables.OutputHook
	}
	if v := tr.runHook(st, first); v != "" {
		return tr.finish(res, v)
	}
	if p.from != hostProc {
		// routing: to this node's own address without DNAT means input
		next := knftables.ForwardHook
		if !st.natted && tr.isNodeIP(p.dst) {
			next = knftables.InputHook
		}
		if v := tr.runHook(st, next); v != "" {
			return tr.finish(res, v)
		}
		if next == knftables.InputHook {
			return tr.finish(res, "accept")
		}
	}
	if v := tr.runHook(st, knftables.PostroutingHook); v != "" {
		return tr.finish(res, v)
	}
	return tr.finish(res, "accept")
}

func (tr *tracer) finish(res *traceResult, v string) traceResult {
	switch {
	case v == "drop" || v == "reject":
		res.verdict, res.endpoints, res.masquerade = v, nil, false
	case len(res.endpoints) > 0:
		res.verdict = "dnat"
	}
	sort.Strings(res.endpoints)
	return *res
}

func (tr *tracer) isNodeIP(s string) bool {
	a := netip.MustParseAddr(s)
	return slices.Contains(tr.nodes, a)
}

// runHook runs the base chains of one hook in priority order; it returns
// "drop" or "reject" when a chain ends the packet, else "".
func (tr *tracer) runHook(st *pktState, hook knftables.BaseChainHook) string {
	type base struct {
		prio int
		ch   *knftables.FakeChain
	}
	var chains []base
	for _, c := range tr.table.Chains {
		if c.Hook != nil && *c.Hook == hook {
			prio, err := knftables.ParsePriority(knftables.InetFamily, string(*c.Priority))
			if err != nil {
				tr.t.Fatalf("chain %s: %v", c.Name, err)
			}
			chains = append(chains, base{prio, c})
		}
	}
	sort.Slice(chains, func(i, j int) bool { return chains[i].prio < chains[j].prio })
	st.hookNow = hook
	for _, b := range chains {
		if v, _ := tr.runChain(st, b.ch.Name); v == "drop" || v == "reject" {
			return v
		}
	}
	return ""
}

// runChain returns the verdict of a chain ("" when it falls off the end or
// returns) and whether that verdict is final for the hook ("accept" from a
// NAT statement ends the hook's chains of this table as well).
func (tr *tracer) runChain(st *pktState, name string) (string, bool) {
	c := tr.table.Chains[name]
	if c == nil {
		tr.t.Fatalf("no chain %q", name)
	}
	for _, r := range c.Rules {
		v, stop := tr.runRule(st, strings.Fields(r.Rule))
		if stop {
			return v, true
		}
	}
	return "", false
}

type ruleOutcome int

const (
	next     ruleOutcome = iota // rule did not match or matched without verdict
	returned                    // the chain ends, the caller goes on
	terminal                    // the packet's fate in this base chain is decided
)

func (tr *tracer) runRule(st *pktState, toks []string) (string, bool) {
	out, v := tr.evalRule(st, toks)
	return v, out != next
}

func (tr *tracer) evalRule(st *pktState, toks []string) (ruleOutcome, string) {
	for i := 0; i < len(toks); {
		switch {
		case toks[i] == "jump" || toks[i] == "goto":
			v, stop := tr.runChain(st, toks[i+1])
			if stop && v != "" {
				return terminal, v
			}
			if toks[i] == "goto" {
				return returned, ""
			}
			return next, ""
		case toks[i] == "return":
			return returned, ""
		case toks[i] == "drop" || toks[i] == "accept":
			return terminal, toks[i]
		case toks[i] == "reject":
			st.res.rejectTCPReset = strings.Join(toks[i:], " ") == "reject with tcp reset"
			return terminal, "reject"
		case toks[i] == "masquerade":
			st.res.masquerade = true
			return terminal, "accept"
		case toks[i] == "ct" && toks[i+1] == "state" && toks[i+2] == "new":
			i += 3
		case toks[i] == "ct" && toks[i+1] == "status" && toks[i+2] == "dnat":
			if !st.natted {
				return next, ""
			}
			i += 3
		case toks[i] == "iifname":
			if !ifnameMatches(strings.Trim(toks[i+1], `"`), tr.iifname(st.packet)) {
				return next, ""
			}
			i += 2
		case toks[i] == "meta" && toks[i+1] == "l4proto" && toks[i+2] != ".":
			n, ok := tr.matchProto(st, toks[i+2:])
			if !ok {
				return next, ""
			}
			i += 2 + n
		case toks[i] == "dnat":
			return tr.evalDNAT(st, toks[i:])
		case toks[i] == "update":
			tr.evalUpdate(st, toks[i:])
			return next, ""
		default:
			n, out, v := tr.evalLookup(st, toks[i:])
			if out != next || n == 0 {
				return out, v
			}
			i += n
		}
	}
	return next, ""
}

// matchProto reads "tcp" or "{ tcp, udp, sctp }" and says how many tokens it took.
func (tr *tracer) matchProto(st *pktState, toks []string) (int, bool) {
	if toks[0] != "{" {
		return 1, toks[0] == st.proto
	}
	end := slices.Index(toks, "}")
	found := false
	for _, p := range toks[1:end] {
		found = found || strings.TrimSuffix(p, ",") == st.proto
	}
	return end + 1, found
}

// evalExpr reads a concatenation and returns every value it may take
// (numgen gives one per outcome), the tokens consumed, and false when the
// expression does not apply to the packet's family.
func (tr *tracer) evalExpr(st *pktState, toks []string) ([][]string, int, bool) {
	keys := [][]string{nil}
	ok := true
	i := 0
	for {
		vals, n, applies := tr.evalComponent(st, toks[i:])
		if n == 0 {
			tr.t.Fatalf("tracer cannot read %q", strings.Join(toks[i:], " "))
		}
		ok = ok && applies
		var grown [][]string
		for _, k := range keys {
			for _, v := range vals {
				grown = append(grown, append(slices.Clone(k), v))
			}
		}
		keys, i = grown, i+n
		if i >= len(toks) || toks[i] != "." {
			return keys, i, ok
		}
		i++
	}
}

func (tr *tracer) evalComponent(st *pktState, toks []string) ([]string, int, bool) {
	ipOK := func(fam string) bool { return (fam == "ip6") == st.v6 }
	daddr, dport := st.dst, strconv.Itoa(st.port)
	if st.natted {
		daddr, dport = st.target.Addr().String(), strconv.Itoa(int(st.target.Port()))
	}
	switch {
	case (toks[0] == "ip" || toks[0] == "ip6") && toks[1] == "saddr":
		return []string{st.src}, 2, ipOK(toks[0])
	case (toks[0] == "ip" || toks[0] == "ip6") && toks[1] == "daddr":
		return []string{daddr}, 2, ipOK(toks[0])
	case toks[0] == "meta" && toks[1] == "l4proto":
		return []string{st.proto}, 2, true
	case toks[0] == "th" && toks[1] == "dport":
		return []string{dport}, 2, true
	case toks[0] == "ct" && toks[1] == "original" && toks[2] == "proto-dst":
		return []string{strconv.Itoa(st.port)}, 3, true
	case toks[0] == "ct" && toks[1] == "original" && toks[3] == "daddr":
		return []string{st.dst}, 4, ipOK(toks[2])
	case toks[0] == "numgen" && toks[1] == "random" && toks[2] == "mod":
		n, _ := strconv.Atoi(toks[3])
		var out []string
		for i := range n {
			out = append(out, strconv.Itoa(i))
		}
		return out, 4, true
	}
	return nil, 0, false
}

// evalLookup handles "EXPR @set", "EXPR != @set" and "EXPR vmap @map".
func (tr *tracer) evalLookup(st *pktState, toks []string) (int, ruleOutcome, string) {
	keys, n, applies := tr.evalExpr(st, toks)
	if !applies {
		return 0, next, "" // the rule is for the other family
	}
	switch {
	case toks[n] == "vmap":
		m := tr.table.Maps[strings.TrimPrefix(toks[n+1], "@")]
		for _, k := range keys {
			if e := findElem(m.Elements, k); e != nil {
				out, v := tr.evalRule(st, strings.Fields(e.Value[0]))
				return n + 2, pick(out == next, returned, out), v
			}
		}
		return 0, next, ""
	case strings.HasPrefix(toks[n], "@") || toks[n] == "!=":
		negate := toks[n] == "!="
		name := strings.TrimPrefix(toks[n+pick(negate, 1, 0)], "@")
		found := false
		for _, k := range keys {
			found = found || findElem(tr.table.Sets[name].Elements, k) != nil
		}
		if found == negate {
			return 0, next, ""
		}
		return n + pick(negate, 2, 1), next, ""
	}
	tr.t.Fatalf("tracer cannot read %q", strings.Join(toks, " "))
	return 0, next, ""
}

func (tr *tracer) evalDNAT(st *pktState, toks []string) (ruleOutcome, string) {
	// dnat ip|ip6 to EXPR map @M
	if (toks[1] == "ip6") != st.v6 {
		return next, ""
	}
	keys, n, applies := tr.evalExpr(st, toks[3:])
	if !applies || toks[3+n] != "map" {
		return next, ""
	}
	m := tr.table.Maps[strings.TrimPrefix(toks[4+n], "@")]
	var targets []string
	for _, k := range keys {
		if e := findElem(m.Elements, k); e != nil {
			ap := netip.AddrPortFrom(netip.MustParseAddr(e.Value[0]), uint16(mustAtoi(e.Value[1])))
			targets = append(targets, ap.String())
			if !st.natted {
				st.target = ap
			}
			st.natted = true
		}
	}
	if len(targets) == 0 {
		return next, ""
	}
	st.res.endpoints = targets
	return terminal, "accept"
}

// evalUpdate interprets "update @M { KEY timeout T : VALUE }", the packet
// path remembering a ClientIP choice: for each DNAT candidate it evaluates
// KEY and VALUE as nft would for the packet sent there, checks them against
// M's type, and records the entry in the result.
func (tr *tracer) evalUpdate(st *pktState, toks []string) {
	name := strings.TrimPrefix(toks[1], "@")
	m := tr.table.Maps[name]
	timeout, colon, end := slices.Index(toks, "timeout"), slices.Index(toks, ":"), slices.Index(toks, "}")
	if m == nil || toks[2] != "{" || timeout < 0 || colon != timeout+2 || end < colon {
		tr.t.Fatalf("tracer cannot read %q", strings.Join(toks, " "))
	}
	keyType, valueType, _ := strings.Cut(m.TypeOf, " : ")
	eval := func(expr []string, typeOf string) ([]string, bool) {
		vals, n, applies := tr.evalExpr(st, expr)
		if applies && (n != len(expr) || len(vals) != 1 || len(vals[0]) != len(strings.Split(typeOf, " . "))) {
			tr.t.Fatalf("update of %s: %q does not fit the map's %q", name, strings.Join(expr, " "), typeOf)
		}
		return slices.Concat(vals...), applies
	}
	natted, target := st.natted, st.target
	defer func() { st.natted, st.target = natted, target }()
	for _, ep := range st.res.endpoints {
		st.natted, st.target = true, netip.MustParseAddrPort(ep)
		key, keyApplies := eval(toks[3:timeout], keyType)
		value, valueApplies := eval(toks[colon+1:end], valueType)
		if !keyApplies || !valueApplies {
			return // an expression of the other family: nothing is written
		}
		st.res.remembered = append(st.res.remembered, fmt.Sprintf("%s %s : %s timeout %s",
			name, strings.Join(key, " . "), strings.Join(value, " . "), toks[timeout+1]))
	}
	sort.Strings(st.res.remembered)
}

// ifnameMatches is nft's string match: a trailing "*" matches any rest.
func ifnameMatches(pattern, name string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(name, prefix)
	}
	return pattern == name
}

func findElem(els []*knftables.Element, key []string) *knftables.Element {
	for _, e := range els {
		if len(e.Key) == len(key) && elemMatches(e.Key, key) {
			return e
		}
	}
	return nil
}

func elemMatches(pattern, key []string) bool {
	for i := range pattern {
		if strings.Contains(pattern[i], "/") {
			p, err := netip.ParsePrefix(pattern[i])
			a, err2 := netip.ParseAddr(key[i])
			if err != nil || err2 != nil || !p.Contains(a) {
				return false
			}
		} else if pattern[i] != key[i] {
			return false
		}
	}
	return true
}

func mustAtoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(fmt.Sprintf("not a number: %q", s))
	}
	return n
}
