package layer2

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/mdlayher/ndp"
)

func TestAnswerNDP(t *testing.T) {
	other := net.HardwareAddr{0x02, 0, 0, 0, 0, 0xbb}
	unspecified := netip.IPv6Unspecified()
	allNodesMAC := net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
	tests := []struct {
		name string
		ns   nsSpec
		// raw, when set, replaces the frame built from ns.
		raw  []byte
		want verdict
		// for answered frames: where the advertisement goes, and its S flag
		toMAC     net.HardwareAddr
		toIP      netip.Addr
		solicited bool
	}{
		{name: "multicast solicitation for an owned VIP", ns: nsSpec{target: vip6A, sll: clientMAC},
			want: answered, toMAC: clientMAC, toIP: clientIP6, solicited: true},
		{name: "unicast NUD probe without source link-layer option, to the frame's source",
			ns:   nsSpec{target: vip6A, dst: vip6A, ethDst: mac0},
			want: answered, toMAC: clientMAC, toIP: clientIP6, solicited: true},
		{name: "source link-layer option wins over the Ethernet source",
			ns:   nsSpec{ethSrc: other, target: vip6A, sll: clientMAC},
			want: answered, toMAC: clientMAC, toIP: clientIP6, solicited: true},
		{name: "duplicate address detection: to all nodes, not solicited",
			ns:   nsSpec{src: unspecified, target: vip6A},
			want: answered, toMAC: allNodesMAC, toIP: netip.MustParseAddr("ff02::1"), solicited: false},
		{name: "not owned", ns: nsSpec{target: vip6B, sll: clientMAC}, want: ignoredNotOwned},
		{name: "our own solicitation (Ethernet source)", ns: nsSpec{ethSrc: mac0, target: vip6A}, want: ignoredOwn},
		{name: "our own solicitation (link-layer option)", ns: nsSpec{ethSrc: other, target: vip6A, sll: mac0},
			want: ignoredOwn},
		{name: "unicast to another host's MAC", ns: nsSpec{target: vip6A, dst: vip6A, ethDst: other},
			want: ignoredNotForUs},
		{name: "IPv6 destination neither the target nor its group",
			ns: nsSpec{target: vip6A, dst: netip.MustParseAddr("2001:db8::99"), ethDst: mac0}, want: ignoredNotForUs},
		{name: "hop limit 64 (forwarded, not from this link)", ns: nsSpec{target: vip6A, hopLimit: 64},
			want: ignoredMalformed},
		{name: "bad checksum", ns: nsSpec{target: vip6A, badChecksum: true}, want: ignoredMalformed},
		{name: "DAD probe with a source link-layer option", ns: nsSpec{src: unspecified, target: vip6A, sll: clientMAC},
			want: ignoredMalformed},
		{name: "DAD probe unicast", ns: nsSpec{src: unspecified, target: vip6A, dst: vip6A, ethDst: mac0},
			want: ignoredMalformed},
		{name: "multicast target", ns: nsSpec{target: netip.MustParseAddr("ff02::1"), dst: solicitedNodeOf(vip6A)},
			want: ignoredMalformed},
		{name: "a Neighbor Advertisement", raw: unsolicitedNA(other, vip6A).frame, want: ignoredNotRequest},
		{name: "an ARP frame", raw: arpRequest(t, vipA), want: ignoredMalformed},
		{name: "truncated", raw: nsFrame(t, nsSpec{target: vip6A})[:60], want: ignoredMalformed},
		{name: "payload length beyond the frame", raw: func() []byte {
			b := nsFrame(t, nsSpec{target: vip6A})
			b[ethHeaderLen+4] = 0xff
			return b
		}(), want: ignoredMalformed},
		{name: "ICMPv6 code 1", raw: func() []byte {
			b := nsFrame(t, nsSpec{target: vip6A})
			b[ethHeaderLen+ipv6HeaderLen+1] = 1
			return b
		}(), want: ignoredMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := tt.raw
			if frame == nil {
				frame = nsFrame(t, tt.ns)
			}
			d := answerNDP(frame, mac0, ownsOnly(vip6A))
			if !answeredAsWanted(t, d, tt.want) {
				return
			}
			got := parseNA(t, sentFrame(d.reply))
			if got.ethDst.String() != tt.toMAC.String() || got.dst != tt.toIP || got.ethSrc.String() != mac0.String() ||
				got.src != vip6A || got.hopLimit != 255 {
				t.Errorf("advertisement %v→%v (%v→%v, hop limit %d), want %v→%v (%v→%v, 255)", got.ethSrc, got.ethDst,
					got.src, got.dst, got.hopLimit, mac0, tt.toMAC, vip6A, tt.toIP)
			}
			if got.na.TargetAddress != vip6A || got.na.Solicited != tt.solicited || !got.na.Override || got.na.Router ||
				got.targetLL.String() != mac0.String() {
				t.Errorf("advertisement %+v with target link-layer %v, want target %v S=%v O=true R=false with %v",
					got.na, got.targetLL, vip6A, tt.solicited, mac0)
			}
		})
	}
}

// TestUnsolicitedNA checks the announcement: to all nodes, not solicited,
// overriding, with the target link-layer address (RFC 4861 §7.2.6).
func TestUnsolicitedNA(t *testing.T) {
	got := parseNA(t, sentFrame(unsolicitedNA(mac0, vip6A)))
	if got.dst != netip.MustParseAddr("ff02::1") || got.ethDst.String() != "33:33:00:00:00:01" ||
		got.src != vip6A || got.hopLimit != 255 {
		t.Errorf("sent %v→%v (hop limit %d) to %v, want %v→ff02::1 (255) to 33:33:00:00:00:01",
			got.src, got.dst, got.hopLimit, got.ethDst, vip6A)
	}
	if got.na.Solicited || !got.na.Override || got.na.TargetAddress != vip6A || got.targetLL.String() != mac0.String() {
		t.Errorf("advertisement %+v, target link-layer %v; want S=false O=true target %v at %v",
			got.na, got.targetLL, vip6A, mac0)
	}
}

// TestICMPv6Checksum checks the receive-side checksum against ndp's
// send-side one, which kernels accept (the root test shows it).
func TestICMPv6Checksum(t *testing.T) {
	for _, target := range []netip.Addr{vip6A, vip6B, netip.MustParseAddr("2001:db8:ffff::1")} {
		ns := &ndp.NeighborSolicitation{TargetAddress: target,
			Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: clientMAC}}}
		msg, err := ndp.MarshalMessageChecksum(ns, clientIP6, solicitedNodeOf(target))
		if err != nil {
			t.Fatal(err)
		}
		if sum := icmpv6Checksum(clientIP6, solicitedNodeOf(target), msg); sum != 0 {
			t.Errorf("%v: checksum over a correct message is %#x, want 0", target, sum)
		}
		msg = append(slices.Clone(msg), 0xff) // odd length
		if sum := icmpv6Checksum(clientIP6, solicitedNodeOf(target), msg); sum == 0 {
			t.Errorf("%v: checksum over a changed message is 0", target)
		}
	}
}

func TestSolicitedNodeGroup(t *testing.T) {
	ip := netip.MustParseAddr("2001:db8::12:3456")
	if g := solicitedNode(ip); g != netip.MustParseAddr("ff02::1:ff12:3456") {
		t.Errorf("solicited-node group of %v is %v", ip, g)
	}
	if m := multicastMAC(netip.MustParseAddr("ff02::1:ff12:3456")); m.String() != "33:33:ff:12:34:56" {
		t.Errorf("multicast MAC %v", m)
	}
}
