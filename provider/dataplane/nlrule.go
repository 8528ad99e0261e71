package dataplane

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/heraldlb/herald/internal/netipx"
)

// setInfo is what a rule needs to know of a named set or map.
type setInfo struct {
	key, data termList // data is nil for a set or vmap
	interval  bool
	id        uint32 // its ID in the batch that creates it, else 0
}

// anonSet is a constant set written into a rule ("{ tcp, udp, sctp }"),
// sent just before the rule that names it by ID.
type anonSet struct {
	id       uint32
	key      termList
	interval bool
	elements []nftables.SetElement
}

// ruleCompiler turns the rule text herald writes into the expressions nft
// 1.0.6 sends for it. It knows the part of nft's grammar that herald's
// rules use (matches on payload, meta, ct and numgen expressions and their
// concatenations; named and anonymous set lookups; verdict maps; dnat
// through a map; dynamic map updates; masquerade; reject; verdicts) and
// refuses the rest with ErrEncode, so that the caller falls back to nft
// rather than writing a rule that means something else.
type ruleCompiler struct {
	sets   map[string]setInfo
	nextID func() uint32
}

type ruleParser struct {
	rc     *ruleCompiler
	toks   []string
	exprs  []nlExpr
	anon   []anonSet
	family uint32 // the nfproto the rule has matched so far
}

func (rc *ruleCompiler) compile(rule string) ([]nlExpr, []anonSet, error) {
	toks, err := tokenize(rule)
	if err != nil {
		return nil, nil, err
	}
	p := &ruleParser{rc: rc, toks: toks}
	for len(p.toks) > 0 {
		if err := p.statement(); err != nil {
			return nil, nil, fmt.Errorf("rule %q: %w", rule, err)
		}
	}
	return p.exprs, p.anon, nil
}

// tokenize splits on blanks, keeping "{ ... }" and quoted strings whole.
func tokenize(s string) ([]string, error) {
	var toks []string
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		end := strings.IndexByte(s, ' ')
		switch s[0] {
		case '{':
			end = strings.IndexByte(s, '}') + 1
		case '"':
			end = strings.IndexByte(s[1:], '"') + 2
		}
		if end <= 0 {
			if s[0] == '{' || s[0] == '"' {
				return nil, fmt.Errorf("%w: unbalanced %q", ErrEncode, s)
			}
			end = len(s)
		}
		toks = append(toks, s[:end])
		s = s[end:]
	}
	return toks, nil
}

func (p *ruleParser) next() string {
	if len(p.toks) == 0 {
		return ""
	}
	t := p.toks[0]
	p.toks = p.toks[1:]
	return t
}

func (p *ruleParser) emit(e ...nlExpr) { p.exprs = append(p.exprs, e...) }

var verdictCodes = map[string]int32{
	"accept": verdictCodeAccept, "drop": verdictCodeDrop, "continue": unix.NFT_CONTINUE,
	"return": unix.NFT_RETURN, "jump": unix.NFT_JUMP, "goto": unix.NFT_GOTO,
}

func (p *ruleParser) statement() error {
	switch tok := p.toks[0]; tok {
	case "accept", "drop", "continue", "return":
		p.next()
		p.emit(verdictExpr{code: verdictCodes[tok]})
	case "jump", "goto":
		p.next()
		chain := p.next()
		if chain == "" {
			return fmt.Errorf("%w: %s without a chain", ErrEncode, tok)
		}
		p.emit(verdictExpr{code: verdictCodes[tok], chain: chain})
	case "masquerade":
		p.next()
		p.emit(masqExpr{})
	case "reject":
		p.next()
		if len(p.toks) >= 3 && strings.Join(p.toks[:3], " ") == "with tcp reset" {
			p.toks = p.toks[3:]
			p.emit(rejectExpr{typ: unix.NFT_REJECT_TCP_RST})
		} else {
			p.emit(rejectExpr{typ: unix.NFT_REJECT_ICMPX_UNREACH, code: unix.NFT_REJECT_ICMPX_PORT_UNREACH})
		}
	case "ct":
		if len(p.toks) > 2 && (p.toks[1] == "state" || p.toks[1] == "status") {
			return p.ctBits()
		}
		return p.match()
	case "dnat":
		return p.dnat()
	case "update":
		return p.update()
	default:
		return p.match()
	}
	return nil
}

var ctBitValues = map[string]map[string]uint32{
	"state":  {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64},
	"status": {"expected": 1, "seen-reply": 2, "assured": 4, "confirmed": 8, "snat": 16, "dnat": 32, "dying": 512},
}

// ctBits is "ct state new" or "ct status dnat": any of the named bits set.
func (p *ruleParser) ctBits() error {
	p.next()
	key := p.next()
	var mask uint32
	for name := range strings.SplitSeq(p.next(), ",") {
		bit, ok := ctBitValues[key][name]
		if !ok {
			return fmt.Errorf("%w: ct %s %s", ErrEncode, key, name)
		}
		mask |= bit
	}
	ctKey := uint32(pick(key == "state", unix.NFT_CT_STATE, unix.NFT_CT_STATUS))
	p.emit(ctLoad{key: ctKey, dreg: unix.NFT_REG_1},
		bitwiseExpr{reg: unix.NFT_REG_1, mask: binary.NativeEndian.AppendUint32(nil, mask), xor: make([]byte, 4)},
		cmpExpr{neq: true, sreg: unix.NFT_REG_1, data: make([]byte, 4)})
	return nil
}

// concatTokens reads "a . b . c", each part one or more words, up to the
// first token that continues neither the part nor the concatenation.
func (p *ruleParser) concatTokens() (string, error) {
	var parts []string
	for {
		part := ""
		for n := min(4, len(p.toks)); n > 0; n-- {
			cand := strings.Join(p.toks[:n], " ")
			if _, err := lookupTerm(cand); err == nil {
				part = cand
				p.toks = p.toks[n:]
				break
			}
		}
		if part == "" {
			return "", fmt.Errorf("%w: unsupported expression at %q", ErrEncode, strings.Join(p.toks, " "))
		}
		parts = append(parts, part)
		if len(p.toks) == 0 || p.toks[0] != "." {
			return strings.Join(parts, " . "), nil
		}
		p.next()
	}
}

// load puts c into registers from slot onwards, after the nfproto match
// its first payload of a family needs.
func (p *ruleParser) load(c termList, slot int) error {
	fam, err := c.family()
	if err != nil {
		return err
	}
	if fam != 0 && p.family != fam {
		if p.family != 0 {
			return fmt.Errorf("%w: a rule matching two families", ErrEncode)
		}
		p.family = fam
		p.emit(metaLoad{key: unix.NFT_META_NFPROTO, dreg: unix.NFT_REG_1},
			cmpExpr{sreg: unix.NFT_REG_1, data: []byte{byte(fam)}})
	}
	for _, t := range c {
		p.emit(t.load(register(slot)))
		slot += (t.size + 3) / 4
	}
	if slot > 16 {
		return fmt.Errorf("%w: more than 16 registers", ErrEncode)
	}
	return nil
}

func (p *ruleParser) set(tok string) (string, setInfo, error) {
	name, ok := strings.CutPrefix(tok, "@")
	info, known := p.rc.sets[name]
	if !ok || !known {
		return "", info, fmt.Errorf("%w: unknown set %q", ErrEncode, tok)
	}
	return name, info, nil
}

// match is "expr rhs": a lookup in a set or verdict map, an anonymous set,
// or a comparison with one value.
func (p *ruleParser) match() error {
	text, err := p.concatTokens()
	if err != nil {
		return err
	}
	c, _ := parseConcat(text)
	rhs := p.next()
	switch {
	case rhs == "vmap":
		name, info, err := p.set(p.next())
		if err != nil {
			return err
		}
		verdict := uint32(unix.NFT_REG_VERDICT)
		if err := p.load(c, 0); err != nil {
			return err
		}
		p.emit(lookupExpr{sreg: unix.NFT_REG_1, dreg: &verdict, set: name, setID: info.id})
	case strings.HasPrefix(rhs, "@"), rhs == "!=" && strings.HasPrefix(p.peek(), "@"):
		inverse := rhs == "!="
		if inverse {
			rhs = p.next()
		}
		name, info, err := p.set(rhs)
		if err != nil {
			return err
		}
		if err := p.loadKey(c, info); err != nil {
			return err
		}
		p.emit(lookupExpr{sreg: unix.NFT_REG_1, set: name, setID: info.id, inverse: inverse})
	case len(c) != 1:
		return fmt.Errorf("%w: a concatenation compared with %q", ErrEncode, rhs)
	case strings.HasPrefix(rhs, "{"):
		return p.anonymous(c[0], text, rhs)
	default:
		neq := rhs == "!="
		if neq {
			rhs = p.next()
		}
		return p.compare(c[0], text, rhs, neq)
	}
	return nil
}

func (p *ruleParser) peek() string {
	if len(p.toks) == 0 {
		return ""
	}
	return p.toks[0]
}

// loadKey loads a set's key. Keys of a concatenated interval set are
// compared bytewise, so nft turns host-order fields to network order.
func (p *ruleParser) loadKey(c termList, info setInfo) error {
	if err := p.load(c, 0); err != nil {
		return err
	}
	if !info.interval || len(c) == 1 {
		return nil
	}
	var out []nlExpr
	slot, loads := 0, p.exprs[len(p.exprs)-len(c):]
	for i, t := range c {
		out = append(out, loads[i])
		if t.host {
			if t.size != 1 {
				return fmt.Errorf("%w: a %d-byte host-order field in an interval key", ErrEncode, t.size)
			}
			out = append(out, byteorderHton{reg: register(slot), size: 2, len: 1})
		}
		slot += (t.size + 3) / 4
	}
	p.exprs = append(p.exprs[:len(p.exprs)-len(c)], out...)
	return nil
}

// dnat is "dnat ip to <key> map @m": the map yields address and port.
func (p *ruleParser) dnat() error {
	p.next()
	fam := map[string]uint32{"ip": unix.NFPROTO_IPV4, "ip6": unix.NFPROTO_IPV6}[p.next()]
	if fam == 0 || p.next() != "to" {
		return fmt.Errorf("%w: dnat form", ErrEncode)
	}
	text, err := p.concatTokens()
	if err != nil {
		return err
	}
	if p.next() != "map" {
		return fmt.Errorf("%w: dnat without a map", ErrEncode)
	}
	name, info, err := p.set(p.next())
	if err != nil {
		return err
	}
	if len(info.data) != 2 {
		return fmt.Errorf("%w: dnat through %s, which does not map to address . port", ErrEncode, name)
	}
	c, _ := parseConcat(text)
	if err := p.load(c, 0); err != nil {
		return err
	}
	dreg := uint32(unix.NFT_REG_1)
	p.emit(lookupExpr{sreg: unix.NFT_REG_1, dreg: &dreg, set: name, setID: info.id},
		dnatExpr{family: fam, addrReg: register(0), protoR: register((info.data[0].size + 3) / 4)})
	return nil
}

// update is "update @m { key timeout Ns : data }".
func (p *ruleParser) update() error {
	p.next()
	name, info, err := p.set(p.next())
	if err != nil {
		return err
	}
	body := strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(p.next(), "{"), "}"))
	keyText, rest, ok1 := strings.Cut(body, " timeout ")
	timeout, dataText, ok2 := strings.Cut(rest, " : ")
	d, err := time.ParseDuration(strings.TrimSpace(timeout))
	if !ok1 || !ok2 || err != nil {
		return fmt.Errorf("%w: update form %q", ErrEncode, body)
	}
	key, err := parseConcat(keyText)
	if err != nil {
		return err
	}
	data, err := parseConcat(dataText)
	if err != nil {
		return err
	}
	if err := p.load(key, 0); err != nil {
		return err
	}
	if err := p.load(data, key.slots()); err != nil {
		return err
	}
	p.emit(dynsetUpdate{keyReg: register(0), dataReg: register(key.slots()), set: name, setID: info.id,
		timeoutMS: uint64(d.Milliseconds())})
	return nil
}

// anonymous is "expr { a, b, c }". As nft does, a set of one value is a
// comparison, and address prefixes make an interval set.
func (p *ruleParser) anonymous(t term, text, group string) error {
	var vals []string
	for v := range strings.SplitSeq(strings.Trim(group, "{} "), ",") {
		vals = append(vals, strings.TrimSpace(v))
	}
	if len(vals) == 1 {
		return p.compare(t, text, vals[0], false)
	}
	set := anonSet{id: p.rc.nextID(), key: termList{t}}
	if t.dtype == dtypeIPv4 || t.dtype == dtypeIPv6 {
		set.interval = true
		els, err := intervalElements(vals, t.size)
		if err != nil {
			return err
		}
		set.elements = els
	} else {
		for _, v := range vals {
			key, err := literal(t, v)
			if err != nil {
				return err
			}
			set.elements = append(set.elements, nftables.SetElement{Key: key})
		}
	}
	if err := p.load(set.key, 0); err != nil {
		return err
	}
	p.anon = append(p.anon, set)
	p.emit(lookupExpr{sreg: unix.NFT_REG_1, set: "__set%d", setID: set.id})
	return nil
}

// compare matches one value; an address prefix compares its leading
// bytes, or the address under a mask when it does not end on a byte.
func (p *ruleParser) compare(t term, text, value string, neq bool) error {
	if t.dtype == dtypeIPv4 || t.dtype == dtypeIPv6 {
		pfx, err := parsePrefix(value)
		if err != nil {
			return err
		}
		bits, addr := pfx.Bits(), pfx.Masked().Addr().AsSlice()
		if len(addr) != t.size {
			return fmt.Errorf("%w: %s of the wrong family for %s", ErrEncode, value, text)
		}
		loadFull := func() error { return p.load(termList{t}, 0) }
		switch {
		case bits == 8*t.size:
			if err := loadFull(); err != nil {
				return err
			}
		case bits%8 == 0 && bits > 0:
			short := t
			if _, ok := t.load(0).(payloadLoad); !ok {
				return fmt.Errorf("%w: prefix of %s", ErrEncode, text)
			}
			short.load = func(reg uint32) nlExpr {
				pl := t.load(reg).(payloadLoad)
				pl.len = uint32(bits / 8)
				return pl
			}
			if err := p.load(termList{short}, 0); err != nil {
				return err
			}
			addr = addr[:bits/8]
		default:
			if err := loadFull(); err != nil {
				return err
			}
			mask := netip.PrefixFrom(netipxMask(t.size), bits).Masked().Addr().AsSlice()
			p.emit(bitwiseExpr{reg: unix.NFT_REG_1, mask: mask, xor: make([]byte, t.size)})
		}
		p.emit(cmpExpr{neq: neq, sreg: unix.NFT_REG_1, data: addr})
		return nil
	}
	data, err := literal(t, value)
	if err != nil {
		return err
	}
	if err := p.load(termList{t}, 0); err != nil {
		return err
	}
	p.emit(cmpExpr{neq: neq, sreg: unix.NFT_REG_1, data: data})
	return nil
}

// netipxMask is the all-ones address of a family.
func netipxMask(size int) netip.Addr {
	b := make([]byte, size)
	for i := range b {
		b[i] = 0xff
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// literal is one value of t as the kernel compares it.
func literal(t term, v string) ([]byte, error) {
	switch t.dtype {
	case dtypeInetProto:
		n, err := protoNumber(v)
		return []byte{n}, err
	case dtypeInetService:
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("%w: port %q", ErrEncode, v)
		}
		return binary.BigEndian.AppendUint16(nil, uint16(n)), nil
	case dtypeIfname:
		name, err := strconv.Unquote(v)
		if err != nil || len(name) >= t.size {
			return nil, fmt.Errorf("%w: interface name %s", ErrEncode, v)
		}
		if prefix, ok := strings.CutSuffix(name, "*"); ok {
			return []byte(prefix), nil
		}
		return append([]byte(name), make([]byte, t.size-len(name))...), nil
	}
	return nil, fmt.Errorf("%w: a value of type %d", ErrEncode, t.dtype)
}

// intervalElements is an anonymous interval set of prefixes as nft sends
// it: overlapping and adjacent ranges merged, each range a start element
// and an end element one past it, and a leading end element at zero
// unless the first range starts there.
func intervalElements(vals []string, size int) ([]nftables.SetElement, error) {
	type span struct{ first, last netip.Addr }
	var spans []span
	for _, v := range vals {
		pfx, err := parsePrefix(v)
		if err != nil {
			return nil, err
		}
		if pfx.Addr().BitLen() != 8*size {
			return nil, fmt.Errorf("%w: %s in a set of another family", ErrEncode, v)
		}
		spans = append(spans, span{pfx.Masked().Addr(), netipx.LastAddr(pfx)})
	}
	slices.SortFunc(spans, func(a, b span) int { return a.first.Compare(b.first) })
	merged := spans[:1]
	for _, s := range spans[1:] {
		cur := &merged[len(merged)-1]
		if next := cur.last.Next(); !next.IsValid() || s.first.Compare(next) <= 0 {
			if s.last.Compare(cur.last) > 0 {
				cur.last = s.last
			}
			continue
		}
		merged = append(merged, s)
	}
	var els []nftables.SetElement
	if zero := make([]byte, size); !slices.Equal(merged[0].first.AsSlice(), zero) {
		els = append(els, nftables.SetElement{Key: zero, IntervalEnd: true})
	}
	for _, s := range merged {
		els = append(els, nftables.SetElement{Key: s.first.AsSlice()})
		if end := s.last.Next(); end.IsValid() {
			els = append(els, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return els, nil
}
