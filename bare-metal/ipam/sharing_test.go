package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

func TestSharing(t *testing.T) {
	a := pool("a", "192.0.2.0/30")
	runScenarios(t, []scenario{
		{
			name:  "same key, different ports: one address",
			pools: []Pool{a},
			steps: []step{
				allocate(req("n/http", key("k"), ports("TCP/80")), "192.0.2.0"),
				allocate(req("n/https", key("k"), ports("TCP/443")), "192.0.2.0"),
				usage("a", IPv4, 4, 1),
			},
		},
		{
			name:  "same port number, other protocol: shared",
			pools: []Pool{a},
			steps: []step{
				allocate(req("n/dns-tcp", key("dns"), ports("TCP/53")), "192.0.2.0"),
				allocate(req("n/dns-udp", key("dns"), ports("UDP/53")), "192.0.2.0"),
			},
		},
		{
			name:  "empty protocol means TCP",
			pools: []Pool{a},
			steps: []step{
				allocate(req("n/x", key("k"), ports("/80")), "192.0.2.0"),
				allocErr(req("n/y", key("k"), ports("TCP/80"), wantIPs("192.0.2.0")), ErrSharingConflict),
			},
		},
		{
			name:  "port collision: any address goes elsewhere, the specific one fails",
			pools: []Pool{a},
			steps: []step{
				allocate(req("n/a", key("k"), ports("TCP/80")), "192.0.2.0"),
				allocate(req("n/b", key("k"), ports("TCP/80", "TCP/81")), "192.0.2.1"),
				allocErr(req("n/c", key("k"), ports("TCP/81"), wantIPs("192.0.2.1")), ErrSharingConflict),
				allocate(req("n/c", key("k"), ports("TCP/81")), "192.0.2.0"),
			},
		},
		{
			name:  "different keys do not share",
			pools: []Pool{a},
			steps: []step{
				allocate(req("n/a", key("k1"), ports("TCP/80")), "192.0.2.0"),
				allocate(req("n/b", key("k2"), ports("TCP/443")), "192.0.2.1"),
				allocErr(req("n/c", key("k2"), ports("TCP/8080"), wantIPs("192.0.2.0")), ErrSharingConflict),
			},
		},
		{
			name:  "holder without a key does not share",
			pools: []Pool{a},
			steps: []step{
				allocate(req("n/a", ports("TCP/80")), "192.0.2.0"),
				allocErr(req("n/b", key("k"), ports("TCP/443"), wantIPs("192.0.2.0")), ErrAddressInUse),
				allocErr(req("n/c", ports("TCP/443"), wantIPs("192.0.2.0")), ErrAddressInUse),
			},
		},
		{
			name:  "Local policy needs equal backends",
			pools: []Pool{a},
			steps: []step{
				allocate(req("n/a", key("k"), ports("TCP/80"), local("app=a")), "192.0.2.0"),
				allocErr(req("n/b", key("k"), ports("TCP/81"), backend("app=b"), wantIPs("192.0.2.0")), ErrSharingConflict),
				allocate(req("n/b", key("k"), ports("TCP/81"), backend("app=b")), "192.0.2.1"),
				allocate(req("n/c", key("k"), ports("TCP/82"), local("app=a")), "192.0.2.0"),
			},
		},
		{
			name:  "Cluster policy on both: backends may differ",
			pools: []Pool{a},
			steps: []step{
				allocate(req("n/a", key("k"), ports("TCP/80"), backend("app=a")), "192.0.2.0"),
				allocate(req("n/b", key("k"), ports("TCP/81"), backend("app=b")), "192.0.2.0"),
			},
		},
	})
}

func TestSharingPreference(t *testing.T) {
	a := pool("a", "192.0.2.0/30")
	runScenarios(t, []scenario{
		{
			name: "an address shared under the key beats pool priority",
			pools: []Pool{
				with(pool("hi", "198.51.100.0/30"), func(p *Pool) { p.Priority = 1 }),
				with(pool("lo", "192.0.2.0/30"), func(p *Pool) { p.Priority = 9 }),
			},
			steps: []step{
				allocIn(req("n/a", key("k"), ports("TCP/80"), wantIPs("192.0.2.2")), "lo", "192.0.2.2"),
				allocIn(req("n/b", key("k"), ports("TCP/443")), "lo", "192.0.2.2"),
				allocIn(req("n/c", key("other"), ports("TCP/443")), "hi", "198.51.100.0"),
			},
		},
		{
			name:  "the lowest compatible shared address is preferred over a fresh one",
			pools: []Pool{a},
			steps: []step{
				allocate(req("n/a", ports("TCP/80")), "192.0.2.0"),
				allocate(req("n/b", key("k"), ports("TCP/80"), wantIPs("192.0.2.3")), "192.0.2.3"),
				allocate(req("n/c", key("k"), ports("TCP/80"), wantIPs("192.0.2.2")), "192.0.2.2"),
				allocate(req("n/d", key("k"), ports("TCP/443")), "192.0.2.2"),
				allocate(req("n/e", key("k"), ports("TCP/443")), "192.0.2.3"),
				allocate(req("n/f", key("k"), ports("TCP/443")), "192.0.2.1"),
			},
		},
		{
			name:  "shared address freed only by its last holder",
			pools: []Pool{a},
			steps: []step{
				allocate(req("n/a", key("k"), ports("TCP/80")), "192.0.2.0"),
				allocate(req("n/b", key("k"), ports("TCP/81")), "192.0.2.0"),
				release("n/a", "192.0.2.0"),
				usage("a", IPv4, 4, 1),
				allocErr(req("n/x", wantIPs("192.0.2.0")), ErrAddressInUse),
				allocate(req("n/c", key("k"), ports("TCP/80")), "192.0.2.0"),
				release("n/b", "192.0.2.0"),
				release("n/c", "192.0.2.0"),
				usage("a", IPv4, 4, 0),
				allocate(req("n/x", wantIPs("192.0.2.0")), "192.0.2.0"),
			},
		},
		{
			name:  "ports changed to collide with a co-holder: the service moves",
			pools: []Pool{a},
			steps: []step{
				allocate(req("n/a", key("k"), ports("TCP/80")), "192.0.2.0"),
				allocate(req("n/b", key("k"), ports("TCP/81")), "192.0.2.0"),
				allocate(req("n/b", key("k"), ports("TCP/81", "TCP/82")), "192.0.2.0"),
				allocate(req("n/b", key("k"), ports("TCP/80")), "192.0.2.1"),
				assigned("n/a", "192.0.2.0"),
			},
		},
		{
			name:  "dual-stack joins the partner's IPv4 and takes a fresh IPv6",
			pools: []Pool{pool("d", "192.0.2.0/30", "2001:db8::/120")},
			steps: []step{
				allocate(req("n/x", families46()), "192.0.2.0", "2001:db8::1"),
				allocate(req("n/a", key("k"), ports("TCP/80"), wantIPs("192.0.2.2")), "192.0.2.2"),
				allocate(req("n/b", key("k"), ports("TCP/443"), families46(), requireAll()), "192.0.2.2", "2001:db8::2"),
				allocate(req("n/c", key("k"), ports("TCP/22"), fams(IPv6)), "2001:db8::2"),
			},
		},
		{
			name:  "restore joins a compatible holder",
			pools: []Pool{a},
			steps: []step{
				restore(req("n/a", key("k"), ports("TCP/80")), "192.0.2.1"),
				restore(req("n/b", key("k"), ports("TCP/443")), "192.0.2.1"),
				restoreErr(req("n/c", key("k"), ports("TCP/443")), ErrSharingConflict, "192.0.2.1"),
				usage("a", IPv4, 4, 1),
			},
		},
	})
}

func TestSharingErrorNamesHolders(t *testing.T) {
	a, err := New([]Pool{pool("a", "192.0.2.0/30")})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Request{
		req("n/b", key("k"), ports("TCP/80")),
		req("n/a", key("k"), ports("TCP/81")),
	} {
		if _, err := a.Allocate(r); err != nil {
			t.Fatal(err)
		}
	}
	_, err = a.Allocate(req("n/c", key("k"), ports("TCP/80"), wantIPs("192.0.2.0")))
	var ae *AddressError
	if !errors.As(err, &ae) || !errors.Is(err, ErrSharingConflict) {
		t.Fatalf("got %v, want an *AddressError wrapping ErrSharingConflict", err)
	}
	if ae.Addr != netip.MustParseAddr("192.0.2.0") || ae.Pool != "a" || !slices.Equal(ae.Holders, []string{"n/a", "n/b"}) {
		t.Fatalf("details %+v", ae)
	}
	const want = "address sharing conflict: 192.0.2.0 (pool a) is held by n/a, n/b: port TCP/80 is already used by n/b"
	if err.Error() != want {
		t.Fatalf("message\n got %q\nwant %q", err.Error(), want)
	}
}
