package layer2

import (
	"net/netip"
	"testing"
)

// BenchmarkAnswer measures a responder's decision per frame. Every ARP
// request on the LAN is broadcast and reaches every announcing node, so
// not_owned is the common case; answered includes building the reply.
func BenchmarkAnswer(b *testing.B) {
	owned := map[netip.Addr]struct{}{vipA: {}, vip6A: {}}
	owns := func(a netip.Addr) bool { _, ok := owned[a]; return ok }
	for _, bc := range []struct {
		name   string
		answer func([]byte) decision
		frame  []byte
	}{
		{"ARP/not_owned", func(f []byte) decision { return answerARP(f, mac0, owns) }, arpRequest(b, vipB)},
		{"ARP/answered", func(f []byte) decision { return answerARP(f, mac0, owns) }, arpRequest(b, vipA)},
		{"NDP/not_owned", func(f []byte) decision { return answerNDP(f, mac0, owns) },
			nsFrame(b, nsSpec{target: vip6B, sll: clientMAC})},
		{"NDP/answered", func(f []byte) decision { return answerNDP(f, mac0, owns) },
			nsFrame(b, nsSpec{target: vip6A, sll: clientMAC})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bc.answer(bc.frame)
			}
		})
	}
}
