package dataplane

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// term is one expression herald's rules and set types are made of ("ip
// daddr", "meta l4proto", ...): how a rule loads it into a register, and
// how nft describes it in a set's type.
type term struct {
	size  int    // bytes in a register
	dtype uint32 // nft's datatype number, for set key and data types
	host  bool   // host byte order (nft's key byte order 1, else 2)
	// family is the meta nfproto a rule must match before loading it in an
	// inet table (NFPROTO_IPV4/6), 0 for none.
	family uint32
	// typeof is nft's userdata for the term in a "typeof" set declaration
	// (NFTNL_UDATA_SET_TYPEOF_*): the expression type and its data.
	typeof []byte
	load   func(reg uint32) nlExpr
}

// nft's datatype numbers (datatype.h), its expression types (expression.h)
// and protocol descriptions (proto.h), as they appear in set declarations.
const (
	dtypeInteger     = 4
	dtypeIPv4        = 7
	dtypeIPv6        = 8
	dtypeInetProto   = 12
	dtypeInetService = 13
	dtypeMark        = 19
	dtypeIfname      = 41
	dtypeVerdict     = 0xffffff00 // NFT_DATA_VERDICT

	exprTypeVerdict = 1
	exprTypePayload = 7
	exprTypeMeta    = 9
	exprTypeConcat  = 13
	exprTypeNumgen  = 23

	protoDescTH  = 11
	protoDescIP  = 12
	protoDescIP6 = 13

	datatypeBits = 6 // a concatenation's type is its fields' types, 6 bits each
)

// udata appends libnftnl's type-length-value userdata; numbers are host order.
func udata(b []byte, typ byte, value []byte) []byte {
	return append(append(b, typ, byte(len(value))), value...)
}

func udataU32(b []byte, typ byte, v uint32) []byte {
	return udata(b, typ, binary.NativeEndian.AppendUint32(nil, v))
}

// typeofExpr is the userdata nft keeps for one typeof expression.
func typeofExpr(exprType uint32, data []byte) []byte {
	return udata(udataU32(nil, 0, exprType), 1, data)
}

func payloadTerm(family uint32, desc, field, base, offset, size uint32, dtype uint32) term {
	return term{
		size: int(size), dtype: dtype, family: family,
		typeof: typeofExpr(exprTypePayload, udataU32(udataU32(nil, 0, desc), 1, field)),
		load: func(reg uint32) nlExpr {
			return payloadLoad{base: base, offset: offset, len: size, dreg: reg}
		},
	}
}

func metaTerm(key uint32, size int, dtype uint32) term {
	return term{
		size: size, dtype: dtype, host: true,
		typeof: typeofExpr(exprTypeMeta, udataU32(nil, 0, key)),
		load:   func(reg uint32) nlExpr { return metaLoad{key: key, dreg: reg} },
	}
}

func ctTerm(key uint32, size int, dtype uint32) term {
	return term{size: size, dtype: dtype, load: func(reg uint32) nlExpr {
		return ctLoad{key: key, dreg: reg, original: true}
	}}
}

// IP header fields, as nft's payload templates number them.
const (
	ipSaddr, ipDaddr   = 11, 12
	ip6Saddr, ip6Daddr = 8, 9
	thDport            = 2
)

var terms = map[string]term{
	"ip saddr": payloadTerm(unix.NFPROTO_IPV4, protoDescIP, ipSaddr, unix.NFT_PAYLOAD_NETWORK_HEADER, 12, 4, dtypeIPv4),
	"ip daddr": payloadTerm(unix.NFPROTO_IPV4, protoDescIP, ipDaddr, unix.NFT_PAYLOAD_NETWORK_HEADER, 16, 4, dtypeIPv4),
	"ip6 saddr": payloadTerm(unix.NFPROTO_IPV6, protoDescIP6, ip6Saddr, unix.NFT_PAYLOAD_NETWORK_HEADER, 8, 16,
		dtypeIPv6),
	"ip6 daddr": payloadTerm(unix.NFPROTO_IPV6, protoDescIP6, ip6Daddr, unix.NFT_PAYLOAD_NETWORK_HEADER, 24, 16,
		dtypeIPv6),
	"th dport":              payloadTerm(0, protoDescTH, thDport, unix.NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, dtypeInetService),
	"meta l4proto":          metaTerm(unix.NFT_META_L4PROTO, 1, dtypeInetProto),
	"meta mark":             metaTerm(unix.NFT_META_MARK, 4, dtypeMark),
	"iifname":               metaTerm(unix.NFT_META_IIFNAME, unix.IFNAMSIZ, dtypeIfname),
	"oifname":               metaTerm(unix.NFT_META_OIFNAME, unix.IFNAMSIZ, dtypeIfname),
	"ct original ip daddr":  ctTerm(unix.NFT_CT_DST_IP, 4, dtypeIPv4),
	"ct original ip6 daddr": ctTerm(unix.NFT_CT_DST_IP6, 16, dtypeIPv6),
	"ct original proto-dst": ctTerm(unix.NFT_CT_PROTO_DST, 2, dtypeInetService),
}

// lookupTerm finds the term s names; "numgen random mod N" is one per N.
func lookupTerm(s string) (term, error) {
	if t, ok := terms[s]; ok {
		return t, nil
	}
	if n, ok := strings.CutPrefix(s, "numgen random mod "); ok {
		mod, err := strconv.ParseUint(n, 10, 32)
		if err != nil || mod == 0 {
			return term{}, fmt.Errorf("%w: numgen modulus %q", ErrEncode, n)
		}
		data := udataU32(udataU32(udataU32(nil, 0, unix.NFT_NG_RANDOM), 1, uint32(mod)), 2, 0)
		return term{
			size: 4, dtype: dtypeInteger, host: true,
			typeof: typeofExpr(exprTypeNumgen, data),
			load:   func(reg uint32) nlExpr { return numgenExpr{dreg: reg, mod: uint32(mod)} },
		}, nil
	}
	return term{}, fmt.Errorf("%w: unsupported expression %q", ErrEncode, s)
}

// termList is a concatenation of terms, or a single term.
type termList []term

func parseConcat(s string) (termList, error) {
	var out termList
	for part := range strings.SplitSeq(s, " . ") {
		t, err := lookupTerm(strings.TrimSpace(part))
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// slots is how many 32-bit registers the concatenation fills.
func (c termList) slots() int {
	n := 0
	for _, t := range c {
		n += (t.size + 3) / 4
	}
	return n
}

// keyLen is the length of a set key of this type: fields of a
// concatenation are padded to whole registers.
func (c termList) keyLen() int {
	if len(c) == 1 {
		return c[0].size
	}
	return 4 * c.slots()
}

func (c termList) dtype() uint32 {
	var t uint32
	for _, f := range c {
		t = t<<datatypeBits | f.dtype
	}
	return t
}

// byteorder is nft's key byte order userdata: none for a concatenation.
func (c termList) byteorder() uint32 {
	switch {
	case len(c) > 1:
		return 0
	case c[0].host:
		return 1
	}
	return 2
}

func (c termList) typeof() []byte {
	if len(c) == 1 {
		return c[0].typeof
	}
	var fields []byte
	for i, t := range c {
		fields = udata(fields, byte(i), t.typeof)
	}
	return typeofExpr(exprTypeConcat, fields)
}

// family is the nfproto the concatenation depends on, 0 if none; an error
// if it mixes families.
func (c termList) family() (uint32, error) {
	var fam uint32
	for _, t := range c {
		if t.family != 0 && fam != 0 && t.family != fam {
			return 0, fmt.Errorf("%w: a concatenation of two families", ErrEncode)
		}
		fam = max(fam, t.family)
	}
	return fam, nil
}
