package layer2

import (
	"net"
	"net/netip"
	"testing"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

func ownsOnly(vips ...netip.Addr) func(netip.Addr) bool {
	return func(a netip.Addr) bool {
		for _, v := range vips {
			if a == v {
				return true
			}
		}
		return false
	}
}

func TestAnswerARP(t *testing.T) {
	zeroIP := netip.IPv4Unspecified()
	other := net.HardwareAddr{0x02, 0, 0, 0, 0, 0xbb}
	tests := []struct {
		name  string
		frame []byte
		want  verdict
		// for answered frames: the reply's ARP target
		replyTo   net.HardwareAddr
		replyToIP netip.Addr
	}{
		{name: "broadcast request for an owned VIP", frame: arpRequest(t, vipA),
			want: answered, replyTo: clientMAC, replyToIP: clientIP},
		{name: "unicast request to us (cache refresh)",
			frame: arpFrameOf(t, clientMAC, mac0, arp.OperationRequest, clientMAC, clientIP, mac0, vipA),
			want:  answered, replyTo: clientMAC, replyToIP: clientIP},
		{name: "ARP probe, sender 0.0.0.0 (arping -D)",
			frame: arpFrameOf(t, clientMAC, ethernet.Broadcast, arp.OperationRequest, clientMAC, zeroIP, zeroMAC, vipA),
			want:  answered, replyTo: clientMAC, replyToIP: zeroIP},
		{name: "answered to the ARP sender, not the Ethernet source",
			frame: arpFrameOf(t, other, ethernet.Broadcast, arp.OperationRequest, clientMAC, clientIP, zeroMAC, vipA),
			want:  answered, replyTo: clientMAC, replyToIP: clientIP},
		{name: "request for a VIP not owned", frame: arpRequest(t, vipB), want: ignoredNotOwned},
		{name: "our own request (Ethernet source)",
			frame: arpFrameOf(t, mac0, ethernet.Broadcast, arp.OperationRequest, mac0, clientIP, zeroMAC, vipA),
			want:  ignoredOwn},
		{name: "sent from this interface for another sender (Ethernet source)",
			frame: arpFrameOf(t, mac0, ethernet.Broadcast, arp.OperationRequest, other, clientIP, zeroMAC, vipA),
			want:  ignoredOwn},
		{name: "our own frame relayed (ARP sender)",
			frame: arpFrameOf(t, other, ethernet.Broadcast, arp.OperationRequest, mac0, clientIP, zeroMAC, vipA),
			want:  ignoredOwn},
		{name: "a reply", frame: arpFrameOf(t, clientMAC, mac0, arp.OperationReply, clientMAC, clientIP, mac0, vipA),
			want: ignoredNotRequest},
		{name: "request unicast to another host (promiscuous)",
			frame: arpFrameOf(t, clientMAC, other, arp.OperationRequest, clientMAC, clientIP, other, vipA),
			want:  ignoredNotForUs},
		{name: "another host's gratuitous ARP for a VIP we own",
			frame: arpFrameOf(t, other, ethernet.Broadcast, arp.OperationRequest, other, vipA, zeroMAC, vipA),
			want:  ignoredConflict},
		{name: "another host's gratuitous ARP for its own address",
			frame: arpFrameOf(t, other, ethernet.Broadcast, arp.OperationRequest, other, vipB, zeroMAC, vipB),
			want:  ignoredAnnouncement},
		{name: "multicast sender hardware address",
			frame: arpFrameOf(t, clientMAC, ethernet.Broadcast, arp.OperationRequest, net.HardwareAddr{1, 0, 0x5e, 0, 0, 1},
				clientIP, zeroMAC, vipA),
			want: ignoredMalformed},
		{name: "truncated", frame: arpRequest(t, vipA)[:20], want: ignoredMalformed},
		{name: "not even an Ethernet header", frame: []byte{1, 2, 3}, want: ignoredMalformed},
		{name: "not ARP", frame: nsFrame(t, nsSpec{target: vip6A}), want: ignoredMalformed},
		{name: "hardware length 8", frame: func() []byte {
			b := arpRequest(t, vipA)
			b[ethHeaderLen+4] = 8
			return b
		}(), want: ignoredMalformed},
		{name: "protocol not IPv4", frame: func() []byte {
			b := arpRequest(t, vipA)
			b[ethHeaderLen+2], b[ethHeaderLen+3] = 0x86, 0xdd
			return b
		}(), want: ignoredMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := answerARP(tt.frame, mac0, ownsOnly(vipA))
			if !answeredAsWanted(t, d, tt.want) {
				return
			}
			got := parseARP(t, sentFrame(d.reply))
			want := arp.Packet{HardwareType: 1, ProtocolType: 0x0800, HardwareAddrLength: 6, IPLength: 4,
				Operation: arp.OperationReply, SenderHardwareAddr: mac0, SenderIP: vipA,
				TargetHardwareAddr: tt.replyTo, TargetIP: tt.replyToIP}
			if !samePacket(got.Packet, want) || got.ethDst.String() != tt.replyTo.String() ||
				got.ethSrc.String() != mac0.String() {
				t.Fatalf("reply %+v from %v to %v, want %+v from %v to %v", got.Packet, got.ethSrc, got.ethDst,
					want, mac0, tt.replyTo)
			}
		})
	}
}

// answeredAsWanted checks a decision's verdict, and that only answered
// frames carry a reply; it reports whether there is a reply to check.
func answeredAsWanted(t *testing.T, d decision, want verdict) bool {
	t.Helper()
	if d.verdict != want {
		t.Fatalf("verdict %v, want %v", d.verdict, want)
	}
	if (d.reply.frame != nil) != (want == answered) {
		t.Fatalf("verdict %v with a reply: %v", d.verdict, d.reply.frame != nil)
	}
	return want == answered
}

func samePacket(a, b arp.Packet) bool {
	return a.HardwareType == b.HardwareType && a.ProtocolType == b.ProtocolType &&
		a.HardwareAddrLength == b.HardwareAddrLength && a.IPLength == b.IPLength && a.Operation == b.Operation &&
		a.SenderHardwareAddr.String() == b.SenderHardwareAddr.String() && a.SenderIP == b.SenderIP &&
		a.TargetHardwareAddr.String() == b.TargetHardwareAddr.String() && a.TargetIP == b.TargetIP
}

// TestGratuitousARP checks the two announcement frames field by field:
// the request form (RFC 5227) and the reply form whose target hardware
// address equals the sender's, the one Linux lets override a fresh entry.
func TestGratuitousARP(t *testing.T) {
	frames := gratuitousARP(mac0, vipA)
	if len(frames) != 2 {
		t.Fatalf("%d frames, want 2", len(frames))
	}
	for i, want := range []arp.Packet{
		{Operation: arp.OperationRequest, TargetHardwareAddr: zeroMAC},
		{Operation: arp.OperationReply, TargetHardwareAddr: mac0},
	} {
		want.HardwareType, want.ProtocolType, want.HardwareAddrLength, want.IPLength = 1, 0x0800, 6, 4
		want.SenderHardwareAddr, want.SenderIP, want.TargetIP = mac0, vipA, vipA
		got := parseARP(t, sentFrame(frames[i]))
		if !samePacket(got.Packet, want) || got.ethDst.String() != ethernet.Broadcast.String() ||
			got.ethSrc.String() != mac0.String() {
			t.Errorf("frame %d: %+v from %v to %v, want %+v from %v to broadcast", i, got.Packet, got.ethSrc,
				got.ethDst, want, mac0)
		}
	}
}
