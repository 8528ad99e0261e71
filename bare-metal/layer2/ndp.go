package layer2

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

const (
	// etherTypeIPv6 is the protocol the NDP responder's packet socket is
	// bound to (a BPF filter narrows it to Neighbor Solicitations).
	etherTypeIPv6 = int(ethernet.EtherTypeIPv6)
	ethHeaderLen  = 14
	ipv6HeaderLen = ipv6.HeaderLen
	// protocolICMPv6 is the IPv6 Next Header value of ICMPv6.
	protocolICMPv6 = 58
	// icmpHeaderLen is type, code and checksum.
	icmpHeaderLen = 4
)

var (
	// allNodes is ff02::1, where unsolicited advertisements and answers to
	// duplicate address detection go, and allNodesMAC its Ethernet
	// multicast address (RFC 2464 §7).
	allNodes    = netip.IPv6LinkLocalAllNodes()
	allNodesMAC = multicastMAC(allNodes)
)

// answerNDP decides what to send back for one frame read from the NDP
// socket of an interface whose hardware address is hw; owns reports whether
// an IPv6 address is announced on that interface.
//
// The frame is a whole Ethernet frame: the responder reads IPv6 at the link
// layer, so it also sees the unicast solicitations a neighbour sends to the
// VIP to confirm its cache entry (Neighbor Unreachability Detection), which
// never reach an ICMPv6 socket: the VIP is not a local address, so the
// kernel routes those packets instead of delivering them.
//
// A solicitation is answered with a solicited, overriding advertisement
// carrying hw, unicast to its source (and to its source link-layer address
// option or, lacking one as unicast NUD probes may, to the frame's Ethernet
// source). A duplicate address detection probe (source ::) is answered to
// all nodes, not solicited (RFC 4861 §7.2.4).
func answerNDP(frame []byte, hw net.HardwareAddr, owns func(netip.Addr) bool) decision {
	ns, h, ok := parseSolicitation(frame)
	if !ok {
		return ignore(h.verdict)
	}
	d := decision{vip: ns.TargetAddress, peer: h.ethSrc}
	if sll := sourceLinkLayer(ns); sll != nil {
		d.peer = sll
	}
	switch {
	case bytes.Equal(h.ethSrc, hw) || bytes.Equal(d.peer, hw):
		d.verdict = ignoredOwn
	case !h.ethDstIsUs(hw):
		d.verdict = ignoredNotForUs
	case h.dst != ns.TargetAddress && h.dst != solicitedNode(ns.TargetAddress):
		d.verdict = ignoredNotForUs
	case h.src.IsUnspecified() && (!h.dst.IsMulticast() || sourceLinkLayer(ns) != nil):
		// RFC 4861 §7.1.1: a DAD probe goes to the solicited-node group
		// and carries no source link-layer address.
		d.verdict = ignoredMalformed
	case !owns(ns.TargetAddress):
		d.verdict = ignoredNotOwned
	case h.src.IsUnspecified():
		d.verdict = answered
		d.reply = advertisement(hw, ns.TargetAddress, allNodes, allNodesMAC, false)
	case !unicastMAC(d.peer):
		d.verdict = ignoredMalformed
	default:
		d.verdict = answered
		d.reply = advertisement(hw, ns.TargetAddress, h.src, d.peer, true)
	}
	return d
}

// ipv6Frame is what answerNDP needs from the Ethernet and IPv6 headers.
type ipv6Frame struct {
	ethSrc, ethDst net.HardwareAddr
	src, dst       netip.Addr
	// verdict is why the frame is no solicitation, when it is not.
	verdict verdict
}

func (h ipv6Frame) ethDstIsUs(hw net.HardwareAddr) bool {
	// Multicast reaches this socket only for groups the interface joined,
	// and the IPv6 destination check narrows it to the target's group.
	return bytes.Equal(h.ethDst, hw) || (len(h.ethDst) == 6 && h.ethDst[0]&1 == 1)
}

// parseSolicitation returns the Neighbor Solicitation in frame, validated
// as RFC 4861 §7.1.1 asks: hop limit 255 (it came from this link), code 0,
// correct checksum, a unicast target.
func parseSolicitation(frame []byte) (*ndp.NeighborSolicitation, ipv6Frame, bool) {
	var h ipv6Frame
	h.verdict = ignoredMalformed
	var f ethernet.Frame
	if err := f.UnmarshalBinary(frame); err != nil || f.EtherType != ethernet.EtherTypeIPv6 ||
		len(f.Payload) < ipv6HeaderLen+icmpHeaderLen {
		return nil, h, false
	}
	h.ethSrc, h.ethDst = f.Source, f.Destination
	ip := f.Payload
	payloadLen := int(binary.BigEndian.Uint16(ip[4:6]))
	if ip[0]>>4 != 6 || ipv6HeaderLen+payloadLen > len(ip) {
		return nil, h, false
	}
	h.src = netip.AddrFrom16([16]byte(ip[8:24]))
	h.dst = netip.AddrFrom16([16]byte(ip[24:40]))
	msg := ip[ipv6HeaderLen : ipv6HeaderLen+payloadLen] // drops Ethernet padding
	if ip[6] != protocolICMPv6 || len(msg) < icmpHeaderLen || ipv6.ICMPType(msg[0]) != ipv6.ICMPTypeNeighborSolicitation {
		// Not an NS at all (the socket's filter lets only NS through, so
		// this is a frame injected without it): nothing was asked.
		h.verdict = ignoredNotRequest
		return nil, h, false
	}
	const hopLimit = 7
	if ip[hopLimit] != ndp.HopLimit || msg[1] != 0 || icmpv6Checksum(h.src, h.dst, msg) != 0 {
		return nil, h, false
	}
	m, err := ndp.ParseMessage(msg)
	if err != nil {
		return nil, h, false
	}
	ns, ok := m.(*ndp.NeighborSolicitation)
	if !ok || ns.TargetAddress.IsMulticast() {
		return nil, h, false
	}
	return ns, h, true
}

// sourceLinkLayer returns the solicitation's source link-layer address
// option, or nil.
func sourceLinkLayer(ns *ndp.NeighborSolicitation) net.HardwareAddr {
	for _, o := range ns.Options {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Source {
			return lla.Addr
		}
	}
	return nil
}

// advertisement builds a Neighbor Advertisement for vip at hw, from vip (as
// a host answering for its own address does) to dst at dstMAC. Override is
// always set: the point is to replace whatever a neighbour cached before,
// e.g. the previous owner's address.
func advertisement(hw net.HardwareAddr, vip, dst netip.Addr, dstMAC net.HardwareAddr, solicited bool) outFrame {
	na := &ndp.NeighborAdvertisement{
		Solicited:     solicited,
		Override:      true,
		TargetAddress: vip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: hw}},
	}
	// Fails only for a non-IPv6 target or a hardware address that is not
	// 6 bytes; callers pass neither.
	msg, _ := ndp.MarshalMessageChecksum(na, vip, dst)
	ip := make([]byte, ipv6HeaderLen, ipv6HeaderLen+len(msg))
	ip[0] = 6 << 4
	binary.BigEndian.PutUint16(ip[4:6], uint16(len(msg)))
	ip[6] = protocolICMPv6
	ip[7] = ndp.HopLimit
	src16, dst16 := vip.As16(), dst.As16()
	copy(ip[8:24], src16[:])
	copy(ip[24:40], dst16[:])
	f := ethernet.Frame{Destination: dstMAC, Source: hw, EtherType: ethernet.EtherTypeIPv6, Payload: append(ip, msg...)}
	b, _ := f.MarshalBinary() // fails only for VLAN tags, which are not set
	return outFrame{dst: dstMAC, frame: b}
}

// unsolicitedNA returns the frame that announces vip at hw to all nodes:
// not solicited, overriding, with the target link-layer address (RFC 4861
// §7.2.6). Neighbours that cached vip replace the entry at once.
func unsolicitedNA(hw net.HardwareAddr, vip netip.Addr) outFrame {
	return advertisement(hw, vip, allNodes, allNodesMAC, false)
}

// solicitedNode returns ip's solicited-node multicast group (RFC 4291
// §2.7.1), where neighbours send their solicitations for ip.
func solicitedNode(ip netip.Addr) netip.Addr {
	g, _ := ndp.SolicitedNodeMulticast(ip) // fails only for IPv4
	return g
}

// multicastMAC maps an IPv6 multicast group to its Ethernet address
// (33:33 and the group's last 32 bits, RFC 2464 §7).
func multicastMAC(group netip.Addr) net.HardwareAddr {
	g := group.As16()
	return net.HardwareAddr{0x33, 0x33, g[12], g[13], g[14], g[15]}
}

// icmpv6Checksum is the Internet checksum of msg under the IPv6
// pseudo-header (RFC 8200 §8.1). Over a message that carries its checksum
// it is 0 when the checksum is right.
func icmpv6Checksum(src, dst netip.Addr, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	sum += uint32(len(msg)) // fits: the payload length field is 16 bits
	sum += protocolICMPv6
	add(msg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
