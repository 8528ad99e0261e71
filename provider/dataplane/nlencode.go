package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/internal/netipx"
)

// ErrEncode is returned when an element cannot be written as kernel bytes:
// a container type or element the netlink encoder does not know. The
// applier then falls back to nft, which knows everything.
var ErrEncode = errors.New("encode nftables element")

// field is one component of a set key or map value as the kernel stores it.
type field int

const (
	fieldIPv4    field = iota // 4 bytes, network order
	fieldIPv6                 // 16 bytes, network order
	fieldProto                // 1 byte, IANA protocol number
	fieldPort                 // 2 bytes, network order
	fieldHostU32              // 4 bytes, host order, as numgen and meta mark write registers
	fieldVerdict              // a verdict, only as a whole map value
)

// layout is how one set's or map's elements are laid out in kernel memory.
type layout struct {
	key      []field
	value    []field // nil for sets
	verdict  bool    // map value is a verdict
	interval bool
}

// layoutOf derives the layout from a container's typeof declaration, the
// only spelling the builder uses. Unknown expressions are an error rather
// than a guess: a wrong width would write elements that never match.
func layoutOf(typeOf string, flags []knftables.SetFlag) (layout, error) {
	var l layout
	for _, f := range flags {
		if f == knftables.IntervalFlag {
			l.interval = true
		}
	}
	keyExpr, valueExpr, isMap := strings.Cut(typeOf, " : ")
	var err error
	if l.key, err = fieldsOf(keyExpr); err != nil {
		return l, err
	}
	if !isMap {
		return l, nil
	}
	if strings.TrimSpace(valueExpr) == "verdict" {
		l.verdict = true
		return l, nil
	}
	l.value, err = fieldsOf(valueExpr)
	return l, err
}

func fieldsOf(concat string) ([]field, error) {
	var out []field
	for part := range strings.SplitSeq(concat, " . ") {
		part = strings.TrimSpace(part)
		switch {
		case part == "ip daddr" || part == "ip saddr":
			out = append(out, fieldIPv4)
		case part == "ip6 daddr" || part == "ip6 saddr":
			out = append(out, fieldIPv6)
		case part == "meta l4proto":
			out = append(out, fieldProto)
		case part == "th dport":
			out = append(out, fieldPort)
		case strings.HasPrefix(part, "numgen "), part == "meta mark":
			out = append(out, fieldHostU32)
		default:
			return nil, fmt.Errorf("%w: unsupported typeof expression %q", ErrEncode, part)
		}
	}
	return out, nil
}

// encodeElements turns one container's elements into kernel set elements,
// byte for byte what nft 1.0.6 sends for the same text (a real-kernel test
// compares both). Interval keys end in a prefix; a concatenated interval is
// one element with a key end, a single-field interval (nft's rbtree) is a
// start element plus an end element one past the range.
func encodeElements(l layout, els []Element) ([]nftables.SetElement, error) {
	out := make([]nftables.SetElement, 0, len(els))
	for _, e := range els {
		var err error
		if out, err = appendEncoded(out, l, e); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// appendEncoded appends e's kernel set elements (two for a single-field
// interval) to out.
func appendEncoded(out []nftables.SetElement, l layout, e Element) ([]nftables.SetElement, error) {
	concatKey := len(l.key) > 1
	if len(e.Key) != len(l.key) {
		return nil, fmt.Errorf("%w: key %q has %d fields, the set %d", ErrEncode, e.Key, len(e.Key), len(l.key))
	}
	var start, end []byte
	var err error
	if l.interval {
		start, end, err = encodeRange(l.key, e.Key, concatKey)
	} else {
		start, err = encodeFields(l.key, e.Key, concatKey)
	}
	if err != nil {
		return nil, err
	}
	el := nftables.SetElement{Key: start, Comment: e.Comment}
	switch {
	case l.verdict:
		if len(e.Value) != 1 {
			return nil, fmt.Errorf("%w: verdict %q", ErrEncode, e.Value)
		}
		if el.VerdictData, err = encodeVerdict(e.Value[0]); err != nil {
			return nil, err
		}
	case l.value != nil:
		if len(e.Value) != len(l.value) {
			return nil, fmt.Errorf("%w: value %q has %d fields, the map %d", ErrEncode, e.Value, len(e.Value), len(l.value))
		}
		if el.Val, err = encodeFields(l.value, e.Value, len(l.value) > 1); err != nil {
			return nil, err
		}
	}
	switch {
	case !l.interval:
		return append(out, el), nil
	case concatKey:
		el.KeyEnd = end
		return append(out, el), nil
	}
	out = append(out, el)
	if end != nil {
		out = append(out, nftables.SetElement{Key: end, IntervalEnd: true})
	}
	return out, nil
}

// encodeRange encodes a key whose last field is a prefix. For a
// concatenation it returns the first and the last key of the range; for a
// single field the first key and the one after the range (nil when the range
// reaches the end of the address space), as rbtree sets want.
func encodeRange(fields []field, key []string, concat bool) (start, end []byte, err error) {
	last := len(key) - 1
	p, err := parsePrefix(key[last])
	if err != nil {
		return nil, nil, err
	}
	first, final := p.Masked().Addr(), netipx.LastAddr(p)
	bound := final
	if !concat {
		bound = final.Next()
	}
	withLast := func(a netip.Addr) []string {
		k := append([]string(nil), key[:last]...)
		return append(k, a.String())
	}
	if start, err = encodeFields(fields, withLast(first), concat); err != nil {
		return nil, nil, err
	}
	if !bound.IsValid() {
		return start, nil, nil
	}
	end, err = encodeFields(fields, withLast(bound), concat)
	return start, end, err
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("%w: %w", ErrEncode, err)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: %w", ErrEncode, err)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// encodeFields concatenates fields; in a concatenation each one occupies a
// whole number of 32-bit registers, zero-padded, as the kernel requires.
func encodeFields(fields []field, vals []string, concat bool) ([]byte, error) {
	out := make([]byte, 0, 40)
	for i, f := range fields {
		var err error
		if out, err = appendField(out, f, vals[i]); err != nil {
			return nil, err
		}
		if concat {
			for len(out)%4 != 0 {
				out = append(out, 0)
			}
		}
	}
	return out, nil
}

func appendField(out []byte, f field, s string) ([]byte, error) {
	switch f {
	case fieldIPv4, fieldIPv6:
		a, err := netip.ParseAddr(s)
		if err != nil || a.Is4() != (f == fieldIPv4) {
			return nil, fmt.Errorf("%w: %q is not an IPv%s address", ErrEncode, s, pick(f == fieldIPv4, "4", "6"))
		}
		return append(out, a.AsSlice()...), nil
	case fieldProto:
		p, err := protoNumber(s)
		if err != nil {
			return nil, err
		}
		return append(out, p), nil
	case fieldPort:
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("%w: port %q: %w", ErrEncode, s, err)
		}
		return binary.BigEndian.AppendUint16(out, uint16(n)), nil
	case fieldHostU32:
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%w: index %q: %w", ErrEncode, s, err)
		}
		return binary.NativeEndian.AppendUint32(out, uint32(n)), nil
	}
	return nil, fmt.Errorf("%w: field %d in a key", ErrEncode, f)
}

func protoNumber(s string) (byte, error) {
	switch s {
	case "tcp":
		return 6, nil
	case "udp":
		return 17, nil
	case "sctp":
		return 132, nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("%w: protocol %q", ErrEncode, s)
	}
	return byte(n), nil
}

func encodeVerdict(s string) (*expr.Verdict, error) {
	verb, chain, _ := strings.Cut(s, " ")
	kinds := map[string]expr.VerdictKind{
		"accept": expr.VerdictAccept, "drop": expr.VerdictDrop, "continue": expr.VerdictContinue,
		"return": expr.VerdictReturn, "goto": expr.VerdictGoto, "jump": expr.VerdictJump,
	}
	kind, ok := kinds[verb]
	if !ok || (chain != "") != (kind == expr.VerdictGoto || kind == expr.VerdictJump) {
		return nil, fmt.Errorf("%w: verdict %q", ErrEncode, s)
	}
	return &expr.Verdict{Kind: kind, Chain: chain}, nil
}
