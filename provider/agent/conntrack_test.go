package agent

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/heraldlb/herald/provider/dataplane"
)

func TestConntrackArgs(t *testing.T) {
	for _, tc := range []struct {
		flow dataplane.StaleFlow
		want string
	}{
		{
			flow: dataplane.StaleFlow{Dst: netip.MustParseAddr("203.0.113.53"), Port: 53,
				Endpoint: netip.MustParseAddrPort("198.51.100.2:5353")},
			want: "-D -f ipv4 -p udp --orig-dst 203.0.113.53 --orig-port-dst 53 --reply-src 198.51.100.2 --reply-port-src 5353",
		},
		{
			flow: dataplane.StaleFlow{Port: 30053},
			want: "-D -f ipv4 -p udp --orig-port-dst 30053",
		},
		{
			flow: dataplane.StaleFlow{IPv6: true, Dst: netip.MustParseAddr("2001:db8::53"), Port: 53},
			want: "-D -f ipv6 -p udp --orig-dst 2001:db8::53 --orig-port-dst 53",
		},
	} {
		if got := strings.Join(conntrackArgs(tc.flow), " "); got != tc.want {
			t.Errorf("conntrackArgs(%+v) = %q, want %q", tc.flow, got, tc.want)
		}
	}
}
