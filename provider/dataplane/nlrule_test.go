package dataplane

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// TestCompileRuleAsNft: the expressions the encoder makes for herald's
// rules, printed as "nft --debug=netlink" prints them, are the ones nft
// 1.0.6 sends for the same text (copied from its output).
func TestCompileRuleAsNft(t *testing.T) {
	r := Build(nil, nil, testNode, Options{})
	b := newBatch()
	if err := b.knowSets(r); err != nil {
		t.Fatal(err)
	}
	for _, tc := range nftDebugCases {
		exprs, anon, err := b.rc.compile(tc.rule)
		if err != nil {
			t.Errorf("%s: %v", tc.rule, err)
			continue
		}
		var lines []string
		for _, e := range exprs {
			lines = append(lines, e.String())
		}
		for _, s := range anon {
			var els []string
			for _, e := range s.elements {
				els = append(els, strings.TrimSpace(hexBytes(e.Key)+pick(e.IntervalEnd, " end", "")))
			}
			lines = append(lines, "set: "+strings.Join(els, pick(s.interval, ", ", " ")))
		}
		if got := strings.Join(lines, "\n"); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.rule, got, tc.want)
		}
	}
}

// nftDebugCases are herald's rule shapes and what nft 1.0.6 prints for
// them with --debug=netlink; an anonymous set's elements follow "set:".
var nftDebugCases = []struct {
	rule string
	want string // nft's lines, the anonymous set's elements after "set:"
}{{
	rule: "ct state new ct status dnat meta l4proto { tcp, udp, sctp } ct original ip daddr . meta l4proto . ct original proto-dst vmap @affsvc4",
	want: `[ ct load state => reg 1 ]
[ bitwise reg 1 = ( reg 1 & 0x00000008 ) ^ 0x00000000 ]
[ cmp neq reg 1 0x00000000 ]
[ ct load status => reg 1 ]
[ bitwise reg 1 = ( reg 1 & 0x00000020 ) ^ 0x00000000 ]
[ cmp neq reg 1 0x00000000 ]
[ meta load l4proto => reg 1 ]
[ lookup reg 1 set __set%d ]
[ ct load dst_ip => reg 1 , dir original ]
[ meta load l4proto => reg 9 ]
[ ct load proto_dst => reg 10 , dir original ]
[ lookup reg 1 set affsvc4 dreg 0 ]
set: 06 11 84`,
}, {
	rule: "meta l4proto { tcp, udp, sctp } dnat ip6 to ip6 saddr . ip6 daddr . meta l4proto . th dport map @aff6",
	want: `[ meta load l4proto => reg 1 ]
[ lookup reg 1 set __set%d ]
[ meta load nfproto => reg 1 ]
[ cmp eq reg 1 0x0000000a ]
[ payload load 16b @ network header + 8 => reg 1 ]
[ payload load 16b @ network header + 24 => reg 2 ]
[ meta load l4proto => reg 3 ]
[ payload load 2b @ transport header + 2 => reg 17 ]
[ lookup reg 1 set aff6 dreg 1 ]
[ nat dnat ip6 addr_min reg 1 proto_min reg 2 ]
set: 06 11 84`,
}, {
	rule: "meta l4proto { tcp, udp, sctp } dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @ep4",
	want: `[ meta load l4proto => reg 1 ]
[ lookup reg 1 set __set%d ]
[ meta load nfproto => reg 1 ]
[ cmp eq reg 1 0x00000002 ]
[ payload load 4b @ network header + 16 => reg 1 ]
[ meta load l4proto => reg 9 ]
[ payload load 2b @ transport header + 2 => reg 10 ]
[ numgen reg 11 = random mod 3 ]
[ lookup reg 1 set ep4 dreg 1 ]
[ nat dnat ip addr_min reg 1 proto_min reg 9 ]
set: 06 11 84`,
}, {
	rule: "meta l4proto { tcp, udp, sctp } update @aff4 { ip saddr . ct original ip daddr . meta l4proto . ct original proto-dst timeout 60s : ip daddr . th dport }",
	want: `[ meta load l4proto => reg 1 ]
[ lookup reg 1 set __set%d ]
[ meta load nfproto => reg 1 ]
[ cmp eq reg 1 0x00000002 ]
[ payload load 4b @ network header + 12 => reg 1 ]
[ ct load dst_ip => reg 9 , dir original ]
[ meta load l4proto => reg 10 ]
[ ct load proto_dst => reg 11 , dir original ]
[ payload load 4b @ network header + 16 => reg 2 ]
[ payload load 2b @ transport header + 2 => reg 13 ]
[ dynset update reg_key 1 set aff4 sreg_data 2 timeout 60000ms ]
set: 06 11 84`,
}, {
	rule: "ip6 daddr . meta l4proto . th dport @fw6 ip6 daddr . meta l4proto . th dport . ip6 saddr != @fwallow6 drop",
	want: `[ meta load nfproto => reg 1 ]
[ cmp eq reg 1 0x0000000a ]
[ payload load 16b @ network header + 24 => reg 1 ]
[ meta load l4proto => reg 2 ]
[ payload load 2b @ transport header + 2 => reg 13 ]
[ lookup reg 1 set fw6 ]
[ payload load 16b @ network header + 24 => reg 1 ]
[ meta load l4proto => reg 2 ]
[ byteorder reg 2 = hton(reg 2, 2, 1) ]
[ payload load 2b @ transport header + 2 => reg 13 ]
[ payload load 16b @ network header + 8 => reg 14 ]
[ lookup reg 1 set fwallow6 0x1 ]
[ immediate reg 0 drop ]`,
}, {
	rule: "ct state new ip daddr { 198.51.100.0/24, 203.0.113.0/25 } goto reject-packet",
	want: `[ ct load state => reg 1 ]
[ bitwise reg 1 = ( reg 1 & 0x00000008 ) ^ 0x00000000 ]
[ cmp neq reg 1 0x00000000 ]
[ meta load nfproto => reg 1 ]
[ cmp eq reg 1 0x00000002 ]
[ payload load 4b @ network header + 16 => reg 1 ]
[ lookup reg 1 set __set%d ]
[ immediate reg 0 goto -> reject-packet ]
set: 00000000 end, c6336400, c6336500 end, cb007100, cb007180 end`,
}, {
	rule: "ct state new ip6 daddr { 2001:db8:1::/112 } goto reject-packet",
	want: `[ ct load state => reg 1 ]
[ bitwise reg 1 = ( reg 1 & 0x00000008 ) ^ 0x00000000 ]
[ cmp neq reg 1 0x00000000 ]
[ meta load nfproto => reg 1 ]
[ cmp eq reg 1 0x0000000a ]
[ payload load 14b @ network header + 24 => reg 1 ]
[ cmp eq reg 1 0xb80d0120 0x00000100 0x00000000 0x00000000 ]
[ immediate reg 0 goto -> reject-packet ]`,
}, {
	rule: "ip6 daddr { 2001:db8::/33 } drop",
	want: `[ meta load nfproto => reg 1 ]
[ cmp eq reg 1 0x0000000a ]
[ payload load 16b @ network header + 24 => reg 1 ]
[ bitwise reg 1 = ( reg 1 & 0xffffffff 0x00000080 0x00000000 0x00000000 ) ^ 0x00000000 0x00000000 0x00000000 0x00000000 ]
[ cmp eq reg 1 0xb80d0120 0x00000000 0x00000000 0x00000000 ]
[ immediate reg 0 drop ]`,
}, {
	rule: "ip daddr { 0.0.0.0/1, 198.51.100.0/24 } drop",
	want: `[ meta load nfproto => reg 1 ]
[ cmp eq reg 1 0x00000002 ]
[ payload load 4b @ network header + 16 => reg 1 ]
[ lookup reg 1 set __set%d ]
[ immediate reg 0 drop ]
set: 00000000, 80000000 end, c6336400, c6336500 end`,
}, {
	rule: "meta l4proto tcp reject with tcp reset",
	want: `[ meta load l4proto => reg 1 ]
[ cmp eq reg 1 0x00000006 ]
[ reject type 1 code 0 ]`,
}, {
	rule: "reject",
	want: `[ reject type 2 code 1 ]`,
}, {
	rule: `iifname "veth*" return`,
	want: `[ meta load iifname => reg 1 ]
[ cmp eq reg 1 0x68746576 ]
[ immediate reg 0 return ]`,
}, {
	rule: `iifname "cni0" return`,
	want: `[ meta load iifname => reg 1 ]
[ cmp eq reg 1 0x30696e63 0x00000000 0x00000000 0x00000000 ]
[ immediate reg 0 return ]`,
}}

func hexBytes(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// TestCompileRuleRefusesWhatItDoesNotKnow: anything outside the grammar
// herald writes is ErrEncode (the applier then uses nft), never a guess.
func TestCompileRuleRefusesWhatItDoesNotKnow(t *testing.T) {
	b := newBatch()
	if err := b.knowSets(Build(nil, nil, testNode, Options{})); err != nil {
		t.Fatal(err)
	}
	for _, rule := range []string{
		"counter accept",
		"ip daddr . meta l4proto . th dport vmap @nosuchmap",
		"tcp dport 80 accept",
		"ip daddr . ip6 saddr @hairpin4",
		"ct state bogus drop",
		"dnat ip to 192.0.2.1",
		`iifname "cni0`,
		"meta mark . ip daddr { 1 } drop",
	} {
		if _, _, err := b.rc.compile(rule); !errors.Is(err, ErrEncode) {
			t.Errorf("%q: err %v, want ErrEncode", rule, err)
		}
	}
}

// TestIntervalElementsMergeAsNft: overlapping and adjacent prefixes merge,
// and no end element follows a range that reaches the end of the family.
func TestIntervalElementsMergeAsNft(t *testing.T) {
	els, err := intervalElements([]string{"192.0.2.128/25", "192.0.2.0/24", "255.255.255.0/24", "192.0.2.0/25"}, 4)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range els {
		a, _ := netip.AddrFromSlice(e.Key)
		got = append(got, a.String()+pick(e.IntervalEnd, "-end", ""))
	}
	if want := "0.0.0.0-end 192.0.2.0 192.0.3.0-end 255.255.255.0"; strings.Join(got, " ") != want {
		t.Errorf("got %v, want %s", got, want)
	}
}
