package layer2

import (
	"bytes"
	"net"
	"net/netip"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

const (
	// etherTypeARP is the protocol the ARP responder's packet socket is
	// bound to.
	etherTypeARP = int(ethernet.EtherTypeARP)
	// arpHardwareEthernet and the lengths below are the only ARP this
	// responder speaks: Ethernet hardware addresses, IPv4 protocol
	// addresses (RFC 826).
	arpHardwareEthernet = 1
	arpHardwareLen      = 6
	arpProtocolLen      = 4
)

var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// answerARP decides what to send back for one frame read from the ARP
// socket of an interface whose hardware address is hw; owns reports whether
// an IPv4 address is announced on that interface.
//
// Only requests are answered, and only when addressed to this host
// (broadcast or hw), asking for an owned address, from a host with a unicast
// hardware address. ARP probes (sender IP 0.0.0.0, RFC 5227, as `arping -D`
// sends) are requests like any other: the reply tells the prober the address
// is taken. Another host's gratuitous ARP (sender IP == target IP) asks
// nothing and is never answered.
func answerARP(frame []byte, hw net.HardwareAddr, owns func(netip.Addr) bool) decision {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(frame); err != nil || f.EtherType != ethernet.EtherTypeARP {
		return ignore(ignoredMalformed)
	}
	if bytes.Equal(f.Source, hw) {
		return ignore(ignoredOwn)
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(f.Payload); err != nil ||
		p.HardwareType != arpHardwareEthernet || p.ProtocolType != uint16(ethernet.EtherTypeIPv4) ||
		p.HardwareAddrLength != arpHardwareLen || p.IPLength != arpProtocolLen {
		return ignore(ignoredMalformed)
	}
	d := decision{vip: p.TargetIP, peer: p.SenderHardwareAddr}
	switch {
	case bytes.Equal(p.SenderHardwareAddr, hw):
		d.verdict = ignoredOwn
	case p.Operation != arp.OperationRequest:
		d.verdict = ignoredNotRequest
	case !bytes.Equal(f.Destination, ethernet.Broadcast) && !bytes.Equal(f.Destination, hw):
		d.verdict = ignoredNotForUs
	case p.SenderIP == p.TargetIP && owns(p.TargetIP):
		d.verdict = ignoredConflict
	case p.SenderIP == p.TargetIP:
		d.verdict = ignoredAnnouncement
	case !owns(p.TargetIP):
		d.verdict = ignoredNotOwned
	case !unicastMAC(p.SenderHardwareAddr):
		d.verdict = ignoredMalformed
	default:
		reply, err := arp.NewPacket(arp.OperationReply, hw, p.TargetIP, p.SenderHardwareAddr, p.SenderIP)
		if err != nil {
			return ignore(ignoredMalformed)
		}
		// Unicast to the asker's ARP sender address, as the Linux kernel
		// answers; the Ethernet source could be a bridge or proxy.
		d.verdict = answered
		d.reply = outFrame{dst: p.SenderHardwareAddr, frame: arpFrame(hw, p.SenderHardwareAddr, reply)}
	}
	return d
}

// gratuitousARP returns the frames that announce vip at hw to the whole
// segment: an ARP announcement (a request with sender IP == target IP and a
// zero target hardware address, RFC 5227 §2.3) and a gratuitous reply.
// Switches and hosts differ in which of the two they honour, so both go out.
// The reply's target hardware address is hw, not broadcast: Linux treats a
// reply as gratuitous, and lets it replace an entry younger than its
// neighbour locktime (1 s by default), only when it equals the sender's
// (arp_is_garp in net/ipv4/arp.c).
func gratuitousARP(hw net.HardwareAddr, vip netip.Addr) []outFrame {
	var frames []outFrame
	for _, p := range []struct {
		op  arp.Operation
		tha net.HardwareAddr
	}{{arp.OperationRequest, zeroMAC}, {arp.OperationReply, hw}} {
		// NewPacket fails only for hardware addresses shorter than 6 bytes
		// or a non-IPv4 address; the Announcer lets neither through.
		pkt, err := arp.NewPacket(p.op, hw, vip, p.tha, vip)
		if err != nil {
			continue
		}
		frames = append(frames, outFrame{dst: ethernet.Broadcast, frame: arpFrame(hw, ethernet.Broadcast, pkt)})
	}
	return frames
}

func arpFrame(src, dst net.HardwareAddr, p *arp.Packet) []byte {
	payload, _ := p.MarshalBinary() // never fails (documented)
	f := ethernet.Frame{Destination: dst, Source: src, EtherType: ethernet.EtherTypeARP, Payload: payload}
	b, _ := f.MarshalBinary() // fails only for VLAN tags, which are not set
	return b
}
