package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

func reserve(ip string, holders ...Request) step {
	return step{desc: "reserve " + ip, do: func(_ *testing.T, a *Allocator) ([]netip.Addr, string, error) {
		return nil, "", a.Reserve(netip.MustParseAddr(ip), holders)
	}}
}

func reserveErr(ip string, err error, holders ...Request) step {
	s := reserve(ip, holders...)
	s.desc, s.err = s.desc+" fails", err
	return s
}

// unreserve drops a reservation; freed says whether that frees the address.
func unreserve(ip string, freed bool) step {
	return step{desc: fmt.Sprintf("unreserve %s (frees it: %v)", ip, freed), do: func(t *testing.T, a *Allocator) ([]netip.Addr, string, error) {
		if got := a.Unreserve(netip.MustParseAddr(ip)); got != freed {
			t.Fatalf("Unreserve(%s) = %v, want %v", ip, got, freed)
		}
		return nil, "", nil
	}}
}

func TestReservations(t *testing.T) {
	quad := pool("a", "192.0.2.0/30")
	runScenarios(t, []scenario{
		{
			name:  "a reserved address is not handed out",
			pools: []Pool{quad},
			steps: []step{reserve("192.0.2.0", req("ns/x")), allocate(req("ns/a"), "192.0.2.1")},
		},
		{
			name:  "a reserved address above the cursor comes back when unreserved",
			pools: []Pool{quad},
			steps: []step{
				reserve("192.0.2.1", req("ns/x")),
				allocate(req("ns/a"), "192.0.2.0"),
				allocate(req("ns/b"), "192.0.2.2"),
				unreserve("192.0.2.1", true),
				allocate(req("ns/c"), "192.0.2.1"),
			},
		},
		{
			name:  "an address released while reserved stays out until unreserved",
			pools: []Pool{quad},
			steps: []step{
				allocate(req("ns/a"), "192.0.2.0"),
				reserve("192.0.2.0", req("ns/x")),
				release("ns/a", "192.0.2.0"),
				allocate(req("ns/b"), "192.0.2.1"),
				unreserve("192.0.2.0", true),
				allocate(req("ns/c"), "192.0.2.0"),
			},
		},
		{
			name:  "a local holder that cannot share with the reservation moves on its next allocation",
			pools: []Pool{quad},
			steps: []step{
				allocate(req("ns/a"), "192.0.2.0"),
				reserve("192.0.2.0", req("ns/x")),
				allocate(req("ns/a"), "192.0.2.1"),
				assigned("ns/a", "192.0.2.1"),
			},
		},
		{
			name:  "a reservation naming the service itself is no conflict",
			pools: []Pool{quad},
			steps: []step{
				allocate(req("ns/a"), "192.0.2.0"),
				reserve("192.0.2.0", req("ns/a")),
				allocate(req("ns/a"), "192.0.2.0"),
				restore(req("ns/a"), "192.0.2.0"),
			},
		},
		{
			name:  "a shared reservation admits a compatible service",
			pools: []Pool{quad},
			steps: []step{
				reserve("192.0.2.2", req("ns/x", key("k"), ports("TCP/80"))),
				allocate(req("ns/a", key("k"), ports("TCP/443"), wantIPs("192.0.2.2")), "192.0.2.2"),
			},
		},
		{
			name:  "a shared reservation refuses a port clash",
			pools: []Pool{quad},
			steps: []step{
				reserve("192.0.2.2", req("ns/x", key("k"), ports("TCP/80"))),
				allocErr(req("ns/a", key("k"), ports("TCP/80"), wantIPs("192.0.2.2")), ErrSharingConflict),
			},
		},
		{
			name:  "a specific address reserved without sharing is in use",
			pools: []Pool{quad},
			steps: []step{
				reserve("192.0.2.3", req("ns/x")),
				allocErr(req("ns/a", wantIPs("192.0.2.3")), ErrAddressInUse),
				restoreErr(req("ns/a"), ErrAddressInUse, "192.0.2.3"),
			},
		},
		{
			name:  "a newer reservation replaces the older",
			pools: []Pool{quad},
			steps: []step{
				reserve("192.0.2.0", req("ns/x")),
				reserve("192.0.2.0", req("ns/x", key("k"))),
				allocate(req("ns/a", key("k"), wantIPs("192.0.2.0")), "192.0.2.0"),
			},
		},
		{
			name:  "reserved addresses count as in use, once, as long as reserved or held",
			pools: []Pool{quad},
			steps: []step{
				reserve("192.0.2.0", req("ns/x")),
				usage("a", IPv4, 4, 1),
				allocate(req("ns/a"), "192.0.2.1"),
				usage("a", IPv4, 4, 2),
				reserve("192.0.2.1", req("ns/a")), // claimed for the Service holding it
				usage("a", IPv4, 4, 2),
				release("ns/a", "192.0.2.1"),
				usage("a", IPv4, 4, 2), // still reserved
				unreserve("192.0.2.1", true),
				unreserve("192.0.2.0", true),
				unreserve("192.0.2.0", false), // not reserved any more
				usage("a", IPv4, 4, 0),
			},
		},
		{
			name:  "an address a service holds stays taken when its reservation goes",
			pools: []Pool{quad},
			steps: []step{
				allocate(req("ns/a"), "192.0.2.0"),
				reserve("192.0.2.0", req("ns/a")),
				unreserve("192.0.2.0", false),
				usage("a", IPv4, 4, 1),
				allocate(req("ns/b"), "192.0.2.1"),
			},
		},
		{
			name:  "a reservation outside every pool is harmless",
			pools: []Pool{quad},
			steps: []step{
				reserve("198.51.100.1", req("ns/x")),
				unreserve("198.51.100.1", false), // in no pool: nothing to hand out
				allocate(req("ns/a"), "192.0.2.0"),
			},
		},
		{
			name:  "a reservation must name a holder",
			pools: []Pool{quad},
			steps: []step{reserveErr("192.0.2.0", ErrInvalidRequest)},
		},
		{
			name:  "a reservation's holder must be named",
			pools: []Pool{quad},
			steps: []step{reserveErr("192.0.2.0", ErrInvalidRequest, Request{})},
		},
	})
}

func TestCanShare(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.1")
	tests := []struct {
		name    string
		req     Request
		holders []Request
		want    error
	}{
		{name: "no holders", req: req("ns/a")},
		{name: "itself", req: req("ns/a"), holders: []Request{req("ns/a")}},
		{name: "holder without key", req: req("ns/a", key("k")), holders: []Request{req("ns/x")}, want: ErrAddressInUse},
		{name: "service without key", req: req("ns/a"), holders: []Request{req("ns/x", key("k"))}, want: ErrAddressInUse},
		{name: "keys differ", req: req("ns/a", key("k")), holders: []Request{req("ns/x", key("j"))}, want: ErrSharingConflict},
		{name: "same key, other ports", req: req("ns/a", key("k"), ports("TCP/80")), holders: []Request{req("ns/x", key("k"), ports("UDP/80"))}},
		{name: "same key, default protocol clashes with TCP", req: req("ns/a", key("k"), ports("/80")), holders: []Request{req("ns/x", key("k"), ports("TCP/80"))}, want: ErrSharingConflict},
		{name: "local policy, other backends", req: req("ns/a", key("k"), local("app=a")), holders: []Request{req("ns/x", key("k"), backend("app=x"))}, want: ErrSharingConflict},
		{name: "local policy, same backends", req: req("ns/a", key("k"), local("app=a")), holders: []Request{req("ns/x", key("k"), backend("app=a"), ports("TCP/1"))}},
		{name: "unnamed holder", req: req("ns/a"), holders: []Request{{}}, want: ErrInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CanShare(ip, tt.req, tt.holders)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("CanShare = %v, want %v", err, tt.want)
			}
			var ae *AddressError
			if tt.want != nil && !errors.Is(tt.want, ErrInvalidRequest) && (!errors.As(err, &ae) || ae.Addr != ip) {
				t.Errorf("error %v does not name the address", err)
			}
		})
	}
}
