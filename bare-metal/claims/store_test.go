package claims_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/heraldlb/herald/bare-metal/claims"
	"github.com/heraldlb/herald/bare-metal/claims/claimstest"
	"github.com/heraldlb/herald/bare-metal/ipam"
)

// request is a Service of the sharing key k on TCP port.
func request(service string, port int32) ipam.Request {
	return ipam.Request{Service: service, SharingKey: "k", Ports: []ipam.Port{{Protocol: "TCP", Port: port}}}
}

func notShown(netip.Addr) bool { return false }

// Writes from a stale cache fail on the resourceVersion, are decided again
// on what is live, and never drop a holder another instance added.
func TestClaimWritesFromAStaleCacheAreDecidedAgain(t *testing.T) {
	ctx := context.Background()
	ip := netip.MustParseAddr("192.0.2.7")
	api := claimstest.NewAPIServer()
	fixedNow := func() time.Time { return time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC) }
	fresh := claims.NewStore(api, api.Cache(), fixedNow, time.Minute)
	if err := fresh.Claim(ctx, request("ns/web", 80), "uid-web", []netip.Addr{ip}, notShown); err != nil {
		t.Fatal(err)
	}
	stale := claims.NewStore(api, api.Snapshot(), fixedNow, time.Minute)
	if err := fresh.Claim(ctx, request("ns/dns", 53), "uid-dns", []netip.Addr{ip}, notShown); err != nil {
		t.Fatal(err)
	}

	// Joining from the stale view: the update conflicts, the live claim
	// already has dns, and tls joins next to both.
	if err := stale.Claim(ctx, request("ns/tls", 443), "uid-tls", []netip.Addr{ip}, notShown); err != nil {
		t.Fatal(err)
	}
	if got := api.Holders(ip.String()); !slices.Equal(got, []string{"ns/web", "ns/dns", "ns/tls"}) {
		t.Fatalf("holders %v, want web, dns and tls", got)
	}
	// A clash only the live claim shows is still refused.
	if err := stale.Claim(ctx, request("ns/other-dns", 53), "uid-other", []netip.Addr{ip}, notShown); err == nil {
		t.Fatal("a port clash with a holder the cache did not show was accepted")
	}
	// Leaving from the stale view removes only the leaver.
	if err := stale.Release(ctx, "ns/web", "", nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := api.Holders(ip.String()); !slices.Equal(got, []string{"ns/dns", "ns/tls"}) {
		t.Fatalf("after web left: holders %v", got)
	}
	// The last holders leave: the claim is deleted, with preconditions
	// that a stale resourceVersion fails and a re-read passes.
	for _, svc := range []string{"ns/dns", "ns/tls"} {
		if err := stale.Release(ctx, svc, "", []netip.Addr{ip}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if api.Count() != 0 {
		t.Fatalf("%d claims left", api.Count())
	}
}
