package layer2

import (
	"testing"

	"golang.org/x/net/bpf"
)

// TestSolicitationFilter runs the NDP socket's kernel filter in the bpf
// package's virtual machine: it must pass solicitations and drop the rest
// of IPv6 (answerNDP would ignore them, but the responder should not even
// wake for them).
func TestSolicitationFilter(t *testing.T) {
	prog, err := solicitationFilter()
	if err != nil {
		t.Fatal(err)
	}
	insns, ok := bpf.Disassemble(prog)
	if !ok {
		t.Fatal("filter does not disassemble")
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	udp := nsFrame(t, nsSpec{target: vip6A})
	udp[ethHeaderLen+6] = 17
	tests := []struct {
		name  string
		frame []byte
		pass  bool
	}{
		{"solicitation", nsFrame(t, nsSpec{target: vip6A, sll: clientMAC}), true},
		{"unicast solicitation", nsFrame(t, nsSpec{target: vip6A, dst: vip6A, ethDst: mac0}), true},
		{"advertisement", unsolicitedNA(mac0, vip6A).frame, false},
		{"UDP", udp, false},
		{"ARP", arpRequest(t, vipA), false},
		{"runt", []byte{1, 2, 3}, false},
	}
	for _, tt := range tests {
		n, err := vm.Run(tt.frame)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if (n > 0) != tt.pass {
			t.Errorf("%s: filter returned %d, want pass=%v", tt.name, n, tt.pass)
		}
		if tt.pass && n < len(tt.frame) {
			t.Errorf("%s: filter truncates the frame to %d of %d bytes", tt.name, n, len(tt.frame))
		}
	}
}
