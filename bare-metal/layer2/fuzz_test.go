package layer2

import (
	"testing"
)

// FuzzAnswer feeds arbitrary bytes to both responders' decisions: a frame
// from the wire must never crash the agent, and whatever is answered must
// be a whole frame with a destination.
func FuzzAnswer(f *testing.F) {
	f.Add(arpRequest(f, vipA))
	f.Add(nsFrame(f, nsSpec{target: vip6A, sll: clientMAC}))
	f.Add(nsFrame(f, nsSpec{target: vip6A, dst: vip6A, ethDst: mac0}))
	f.Add(unsolicitedNA(mac0, vip6A).frame)
	f.Fuzz(func(t *testing.T, frame []byte) {
		for _, answer := range []func([]byte) decision{
			func(b []byte) decision { return answerARP(b, mac0, ownsOnly(vipA)) },
			func(b []byte) decision { return answerNDP(b, mac0, ownsOnly(vip6A)) },
		} {
			d := answer(frame)
			if d.verdict >= numVerdicts {
				t.Fatalf("verdict %d out of range", d.verdict)
			}
			if (d.verdict == answered) != (d.reply.frame != nil) {
				t.Fatalf("verdict %v with reply %v", d.verdict, d.reply.frame != nil)
			}
			if d.verdict == answered && (len(d.reply.dst) != 6 || len(d.reply.frame) < 60) {
				t.Fatalf("reply to %v of %d bytes", d.reply.dst, len(d.reply.frame))
			}
		}
	})
}
