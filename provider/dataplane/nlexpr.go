package dataplane

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nlExpr is one nftables expression of a rule, as the kernel takes it. Each
// writes the attributes nft 1.0.6 (through libnftnl) writes for it, and
// prints itself as "nft --debug=netlink" does, so that tests compare the
// encoder with nft's own output line by line. google/nftables has
// expression types too, but some differ from nft's: its ct omits the
// direction the kernel requires for "ct original ip daddr", for one.
type nlExpr interface {
	kind() string
	attrs(ae *netlink.AttributeEncoder)
	String() string
}

// Registers are numbered as nft allocates them: slot n of the 32-bit
// registers, named as the 128-bit register when it starts one.
func register(slot int) uint32 {
	if slot%4 == 0 {
		return uint32(unix.NFT_REG_1 + slot/4)
	}
	return uint32(unix.NFT_REG32_00 + slot)
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// hexWords prints data as libnftnl does: 32-bit words in host order.
func hexWords(data []byte) string {
	var words []string
	for i := 0; i < len(data); i += 4 {
		var w [4]byte
		copy(w[:], data[i:])
		words = append(words, fmt.Sprintf("0x%08x", binary.NativeEndian.Uint32(w[:])))
	}
	return strings.Join(words, " ")
}

func nestedValue(ae *netlink.AttributeEncoder, typ uint16, data []byte) {
	ae.Nested(typ, func(nae *netlink.AttributeEncoder) error {
		nae.Bytes(unix.NFTA_DATA_VALUE, data)
		return nil
	})
}

var metaKeyNames = map[uint32]string{
	unix.NFT_META_MARK: "mark", unix.NFT_META_IIFNAME: "iifname", unix.NFT_META_OIFNAME: "oifname",
	unix.NFT_META_NFPROTO: "nfproto", unix.NFT_META_L4PROTO: "l4proto",
}

type metaLoad struct{ key, dreg uint32 }

func (e metaLoad) kind() string { return "meta" }
func (e metaLoad) attrs(ae *netlink.AttributeEncoder) {
	ae.Bytes(unix.NFTA_META_KEY, be32(e.key))
	ae.Bytes(unix.NFTA_META_DREG, be32(e.dreg))
}
func (e metaLoad) String() string {
	return fmt.Sprintf("[ meta load %s => reg %d ]", metaKeyNames[e.key], e.dreg)
}

type cmpExpr struct {
	neq  bool
	sreg uint32
	data []byte
}

func (e cmpExpr) kind() string { return "cmp" }
func (e cmpExpr) attrs(ae *netlink.AttributeEncoder) {
	ae.Bytes(unix.NFTA_CMP_SREG, be32(e.sreg))
	ae.Bytes(unix.NFTA_CMP_OP, be32(uint32(pick(e.neq, unix.NFT_CMP_NEQ, unix.NFT_CMP_EQ))))
	nestedValue(ae, unix.NFTA_CMP_DATA, e.data)
}
func (e cmpExpr) String() string {
	return fmt.Sprintf("[ cmp %s reg %d %s ]", pick(e.neq, "neq", "eq"), e.sreg, hexWords(e.data))
}

type payloadLoad struct{ base, offset, len, dreg uint32 }

func (e payloadLoad) kind() string { return "payload" }
func (e payloadLoad) attrs(ae *netlink.AttributeEncoder) {
	ae.Bytes(unix.NFTA_PAYLOAD_DREG, be32(e.dreg))
	ae.Bytes(unix.NFTA_PAYLOAD_BASE, be32(e.base))
	ae.Bytes(unix.NFTA_PAYLOAD_OFFSET, be32(e.offset))
	ae.Bytes(unix.NFTA_PAYLOAD_LEN, be32(e.len))
}
func (e payloadLoad) String() string {
	base := [...]string{"link", "network", "transport"}[e.base]
	return fmt.Sprintf("[ payload load %db @ %s header + %d => reg %d ]", e.len, base, e.offset, e.dreg)
}

type bitwiseExpr struct {
	reg       uint32
	mask, xor []byte
}

func (e bitwiseExpr) kind() string { return "bitwise" }
func (e bitwiseExpr) attrs(ae *netlink.AttributeEncoder) {
	ae.Bytes(unix.NFTA_BITWISE_SREG, be32(e.reg))
	ae.Bytes(unix.NFTA_BITWISE_DREG, be32(e.reg))
	ae.Bytes(unix.NFTA_BITWISE_LEN, be32(uint32(len(e.mask))))
	nestedValue(ae, unix.NFTA_BITWISE_MASK, e.mask)
	nestedValue(ae, unix.NFTA_BITWISE_XOR, e.xor)
}
func (e bitwiseExpr) String() string {
	return fmt.Sprintf("[ bitwise reg %d = ( reg %d & %s ) ^ %s ]", e.reg, e.reg, hexWords(e.mask), hexWords(e.xor))
}

// lookupExpr matches a register against a set, or maps it through a map
// (dreg 0 is the verdict register, for vmaps).
type lookupExpr struct {
	sreg    uint32
	dreg    *uint32
	set     string
	setID   uint32 // the set's ID in this batch; 0 when it exists already
	inverse bool
}

func (e lookupExpr) kind() string { return "lookup" }
func (e lookupExpr) attrs(ae *netlink.AttributeEncoder) {
	ae.Bytes(unix.NFTA_LOOKUP_SREG, be32(e.sreg))
	if e.dreg != nil {
		ae.Bytes(unix.NFTA_LOOKUP_DREG, be32(*e.dreg))
	}
	ae.String(unix.NFTA_LOOKUP_SET, e.set)
	if e.setID != 0 {
		ae.Bytes(unix.NFTA_LOOKUP_SET_ID, be32(e.setID))
	}
	if e.inverse {
		ae.Bytes(unix.NFTA_LOOKUP_FLAGS, be32(unix.NFT_LOOKUP_F_INV))
	}
}
func (e lookupExpr) String() string {
	s := fmt.Sprintf("[ lookup reg %d set %s", e.sreg, e.set)
	if e.dreg != nil {
		s += fmt.Sprintf(" dreg %d", *e.dreg)
	}
	if e.inverse {
		s += " 0x1"
	}
	return s + " ]"
}

var ctKeyNames = map[uint32]string{
	unix.NFT_CT_STATE: "state", unix.NFT_CT_STATUS: "status", unix.NFT_CT_PROTO_DST: "proto_dst",
	unix.NFT_CT_DST_IP: "dst_ip", unix.NFT_CT_DST_IP6: "dst_ip6",
}

// ctLoad loads a conntrack field; original is the direction of keys that
// have one (the kernel refuses them without).
type ctLoad struct {
	key, dreg uint32
	original  bool
}

func (e ctLoad) kind() string { return "ct" }
func (e ctLoad) attrs(ae *netlink.AttributeEncoder) {
	ae.Bytes(unix.NFTA_CT_KEY, be32(e.key))
	ae.Bytes(unix.NFTA_CT_DREG, be32(e.dreg))
	if e.original {
		ae.Uint8(unix.NFTA_CT_DIRECTION, 0) // IP_CT_DIR_ORIGINAL
	}
}
func (e ctLoad) String() string {
	s := fmt.Sprintf("[ ct load %s => reg %d", ctKeyNames[e.key], e.dreg)
	if e.original {
		s += " , dir original"
	}
	return s + " ]"
}

// verdictExpr is an immediate verdict; chain is set for jump and goto.
type verdictExpr struct {
	code  int32
	chain string
}

// Netfilter's verdict codes; golang.org/x/sys names only nftables' own.
const (
	verdictCodeDrop   int32 = 0
	verdictCodeAccept int32 = 1
)

var verdictNames = map[int32]string{
	verdictCodeAccept: "accept", verdictCodeDrop: "drop", unix.NFT_CONTINUE: "continue",
	unix.NFT_RETURN: "return", unix.NFT_JUMP: "jump", unix.NFT_GOTO: "goto",
}

func (e verdictExpr) kind() string { return "immediate" }
func (e verdictExpr) attrs(ae *netlink.AttributeEncoder) {
	ae.Bytes(unix.NFTA_IMMEDIATE_DREG, be32(unix.NFT_REG_VERDICT))
	ae.Nested(unix.NFTA_IMMEDIATE_DATA, func(dae *netlink.AttributeEncoder) error {
		dae.Nested(unix.NFTA_DATA_VERDICT, func(vae *netlink.AttributeEncoder) error {
			vae.Bytes(unix.NFTA_VERDICT_CODE, be32(uint32(e.code)))
			if e.chain != "" {
				vae.String(unix.NFTA_VERDICT_CHAIN, e.chain)
			}
			return nil
		})
		return nil
	})
}
func (e verdictExpr) String() string {
	if e.chain != "" {
		return fmt.Sprintf("[ immediate reg 0 %s -> %s ]", verdictNames[e.code], e.chain)
	}
	return fmt.Sprintf("[ immediate reg 0 %s ]", verdictNames[e.code])
}

type masqExpr struct{}

func (masqExpr) kind() string                    { return "masq" }
func (masqExpr) attrs(*netlink.AttributeEncoder) {}
func (masqExpr) String() string                  { return "[ masq ]" }

type rejectExpr struct {
	typ  uint32
	code uint8
}

func (e rejectExpr) kind() string { return "reject" }
func (e rejectExpr) attrs(ae *netlink.AttributeEncoder) {
	ae.Bytes(unix.NFTA_REJECT_TYPE, be32(e.typ))
	ae.Uint8(unix.NFTA_REJECT_ICMP_CODE, e.code)
}
func (e rejectExpr) String() string { return fmt.Sprintf("[ reject type %d code %d ]", e.typ, e.code) }

// dnatExpr rewrites the destination to the address and port in registers.
type dnatExpr struct {
	family          uint32
	addrReg, protoR uint32
}

func (e dnatExpr) kind() string { return "nat" }
func (e dnatExpr) attrs(ae *netlink.AttributeEncoder) {
	ae.Bytes(unix.NFTA_NAT_TYPE, be32(unix.NFT_NAT_DNAT))
	ae.Bytes(unix.NFTA_NAT_FAMILY, be32(e.family))
	ae.Bytes(unix.NFTA_NAT_REG_ADDR_MIN, be32(e.addrReg))
	ae.Bytes(unix.NFTA_NAT_REG_PROTO_MIN, be32(e.protoR))
}
func (e dnatExpr) String() string {
	return fmt.Sprintf("[ nat dnat %s addr_min reg %d proto_min reg %d ]",
		pick(e.family == unix.NFPROTO_IPV6, "ip6", "ip"), e.addrReg, e.protoR)
}

type numgenExpr struct{ dreg, mod uint32 }

func (e numgenExpr) kind() string { return "numgen" }
func (e numgenExpr) attrs(ae *netlink.AttributeEncoder) {
	ae.Bytes(unix.NFTA_NG_DREG, be32(e.dreg))
	ae.Bytes(unix.NFTA_NG_MODULUS, be32(e.mod))
	ae.Bytes(unix.NFTA_NG_TYPE, be32(unix.NFT_NG_RANDOM))
	ae.Bytes(unix.NFTA_NG_OFFSET, be32(0))
}
func (e numgenExpr) String() string {
	return fmt.Sprintf("[ numgen reg %d = random mod %d ]", e.dreg, e.mod)
}

// dynsetUpdate adds or refreshes an element of a dynamic map from the packet
// path, as "update @set { key timeout T : data }" does.
type dynsetUpdate struct {
	keyReg, dataReg uint32
	set             string
	setID           uint32
	timeoutMS       uint64
}

func (e dynsetUpdate) kind() string { return "dynset" }
func (e dynsetUpdate) attrs(ae *netlink.AttributeEncoder) {
	ae.String(unix.NFTA_DYNSET_SET_NAME, e.set)
	if e.setID != 0 {
		ae.Bytes(unix.NFTA_DYNSET_SET_ID, be32(e.setID))
	}
	ae.Bytes(unix.NFTA_DYNSET_OP, be32(unix.NFT_DYNSET_OP_UPDATE))
	ae.Bytes(unix.NFTA_DYNSET_SREG_KEY, be32(e.keyReg))
	ae.Bytes(unix.NFTA_DYNSET_SREG_DATA, be32(e.dataReg))
	ae.Uint64(unix.NFTA_DYNSET_TIMEOUT, e.timeoutMS)
}
func (e dynsetUpdate) String() string {
	return fmt.Sprintf("[ dynset update reg_key %d set %s sreg_data %d timeout %dms ]", e.keyReg, e.set, e.dataReg, e.timeoutMS)
}

// byteorderHton is what nft puts after loading a host-order field into a
// concatenated interval key: the interval set compares keys bytewise.
type byteorderHton struct{ reg, size, len uint32 }

func (e byteorderHton) kind() string { return "byteorder" }
func (e byteorderHton) attrs(ae *netlink.AttributeEncoder) {
	ae.Bytes(unix.NFTA_BYTEORDER_SREG, be32(e.reg))
	ae.Bytes(unix.NFTA_BYTEORDER_DREG, be32(e.reg))
	ae.Bytes(unix.NFTA_BYTEORDER_OP, be32(unix.NFT_BYTEORDER_HTON))
	ae.Bytes(unix.NFTA_BYTEORDER_LEN, be32(e.len))
	ae.Bytes(unix.NFTA_BYTEORDER_SIZE, be32(e.size))
}
func (e byteorderHton) String() string {
	return fmt.Sprintf("[ byteorder reg %d = hton(reg %d, %d, %d) ]", e.reg, e.reg, e.size, e.len)
}

// encodeExprs is a rule's NFTA_RULE_EXPRESSIONS list.
func encodeExprs(ae *netlink.AttributeEncoder, exprs []nlExpr) {
	ae.Nested(unix.NFTA_RULE_EXPRESSIONS, func(lae *netlink.AttributeEncoder) error {
		for _, e := range exprs {
			lae.Nested(unix.NFTA_LIST_ELEM, func(eae *netlink.AttributeEncoder) error {
				eae.String(unix.NFTA_EXPR_NAME, e.kind())
				eae.Nested(unix.NFTA_EXPR_DATA, func(dae *netlink.AttributeEncoder) error {
					e.attrs(dae)
					return nil
				})
				return nil
			})
		}
		return nil
	})
}
