package ipam

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	tests := []struct {
		in          string
		first, last string
		str         string // String(); "" = same as in
		errHas      string // error must wrap ErrInvalidRange and contain this
	}{
		{in: "192.0.2.0/28", first: "192.0.2.0", last: "192.0.2.15"},
		{in: "192.0.2.10-192.0.2.20", first: "192.0.2.10", last: "192.0.2.20"},
		{in: " 192.0.2.10 - 192.0.2.20 ", first: "192.0.2.10", last: "192.0.2.20", str: "192.0.2.10-192.0.2.20"},
		{in: "192.0.2.0-192.0.2.255", first: "192.0.2.0", last: "192.0.2.255", str: "192.0.2.0/24"},
		{in: "192.0.2.7-192.0.2.7", first: "192.0.2.7", last: "192.0.2.7", str: "192.0.2.7/32"},
		{in: "192.0.2.7/32", first: "192.0.2.7", last: "192.0.2.7"},
		{in: "0.0.0.0/0", first: "0.0.0.0", last: "255.255.255.255"},
		{in: "2001:db8::/120", first: "2001:db8::", last: "2001:db8::ff"},
		{in: "2001:db8::1-2001:db8::ff", first: "2001:db8::1", last: "2001:db8::ff"},
		{in: "2001:db8::/64", first: "2001:db8::", last: "2001:db8::ffff:ffff:ffff:ffff"},
		{in: "::/0", first: "::", last: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{in: "2001:db8::/127", first: "2001:db8::", last: "2001:db8::1"},
		{in: "192.0.2.1/28", errHas: "host bits set (did you mean 192.0.2.0/28?)"},
		{in: "2001:db8::1/64", errHas: "host bits set (did you mean 2001:db8::/64?)"},
		{in: "192.0.2.1-2001:db8::1", errHas: "mixes IPv4 and IPv6"},
		{in: "192.0.2.20-192.0.2.10", errHas: "ends before it starts"},
		{in: "fe80::1%eth0-fe80::2%eth0", errHas: "zone"},
		{in: "fe80::1%eth0/64", errHas: "not a valid CIDR"},
		{in: "::ffff:192.0.2.0/120", errHas: "IPv4-mapped"},
		{in: "::ffff:192.0.2.1-::ffff:192.0.2.9", errHas: "IPv4-mapped"},
		{in: "192.0.2.1", errHas: "neither a CIDR nor"},
		{in: "", errHas: "empty"},
		{in: "   ", errHas: "empty"},
		{in: "banana", errHas: "neither"},
		{in: "192.0.2.0/33", errHas: "not a valid CIDR"},
		{in: "192.0.2.1-", errHas: "is not an IP address"},
		{in: "-192.0.2.1", errHas: "is not an IP address"},
		{in: "192.0.2.1-192.0.2.2-192.0.2.3", errHas: "is not an IP address"},
		{in: "192.0.2.0/24/24", errHas: "not a valid CIDR"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseRange(tt.in)
			if tt.errHas != "" {
				if !errors.Is(err, ErrInvalidRange) || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("ParseRange(%q) = %v, %v; want error containing %q", tt.in, r, err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRange(%q): %v", tt.in, err)
			}
			want := Range{First: netip.MustParseAddr(tt.first), Last: netip.MustParseAddr(tt.last)}
			if r != want {
				t.Fatalf("ParseRange(%q) = %v, want %v", tt.in, r, want)
			}
			str := tt.str
			if str == "" {
				str = tt.in
			}
			if r.String() != str {
				t.Fatalf("String() = %q, want %q", r.String(), str)
			}
		})
	}
}

func TestRangeContains(t *testing.T) {
	r := ranges("192.0.2.10-192.0.2.20")[0]
	for s, want := range map[string]bool{
		"192.0.2.10": true, "192.0.2.20": true, "192.0.2.15": true,
		"192.0.2.9": false, "192.0.2.21": false, "::ffff:192.0.2.15": false, "2001:db8::": false,
	} {
		if got := r.Contains(netip.MustParseAddr(s)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", s, got, want)
		}
	}
	if r.Contains(netip.Addr{}) {
		t.Error("Contains(zero Addr) = true")
	}
	r6 := ranges("fe80::/64")[0]
	if r6.Contains(netip.MustParseAddr("fe80::1%eth0")) {
		t.Error("a zoned address is never in a pool")
	}
}

func TestRangeCounts(t *testing.T) {
	tests := []struct {
		in          string
		size, buggy uint64
	}{
		{"192.0.2.0/24", 256, 2},
		{"192.0.2.1-192.0.2.254", 254, 0},
		{"192.0.2.255-192.0.3.0", 2, 2},
		{"0.0.0.0/0", 1 << 32, 1 << 25},
		{"2001:db8::/65", 1 << 63, 0},
		{"2001:db8::/64", ^uint64(0), 0},
		{"::/0", ^uint64(0), 0},
	}
	for _, tt := range tests {
		r := ranges(tt.in)[0]
		if got := r.size(); got != tt.size {
			t.Errorf("%s: size %d, want %d", tt.in, got, tt.size)
		}
		if got := r.buggyCount(); got != tt.buggy {
			t.Errorf("%s: buggy %d, want %d", tt.in, got, tt.buggy)
		}
	}
}
