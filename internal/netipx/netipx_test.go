package netipx

import (
	"net/netip"
	"testing"
)

func TestLastAddr(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		want   string
	}{
		{"192.0.2.0/24", "192.0.2.255"},
		{"192.0.2.7/32", "192.0.2.7"},
		{"192.0.2.0/28", "192.0.2.15"},
		{"192.0.2.130/25", "192.0.2.255"}, // host bits in the input are ignored
		{"198.51.100.0/23", "198.51.101.255"},
		{"0.0.0.0/0", "255.255.255.255"},
		{"2001:db8::/64", "2001:db8::ffff:ffff:ffff:ffff"},
		{"2001:db8::/61", "2001:db8:0:7:ffff:ffff:ffff:ffff"},
		{"2001:db8::1/128", "2001:db8::1"},
		{"::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{"::ffff:192.0.2.0/120", "::ffff:192.0.2.255"},
	} {
		if got := LastAddr(netip.MustParsePrefix(tc.prefix)); got != netip.MustParseAddr(tc.want) {
			t.Errorf("LastAddr(%s) = %s, want %s", tc.prefix, got, tc.want)
		}
	}
	if got := LastAddr(netip.Prefix{}); got.IsValid() {
		t.Errorf("LastAddr of the zero Prefix = %s, want the zero Addr", got)
	}
}
