package dataplane

import (
	"bytes"
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// skeletonVariants are rulesets whose chains, rules and set definitions
// differ in every way Options and Services can make them differ: pick
// chains past the precreated ones, affinity timeouts, ServiceCIDRs of both
// families (several, one, adjacent, not on a byte boundary), every way of
// detecting pods (pod CIDRs, a bridge, an interface prefix), masquerade-all,
// the affinity map's size, and no Services at all.
func skeletonVariants() []buildState {
	st := builderStates()
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	withOpts := func(name string, s buildState, o Options) buildState {
		s.name, s.opts = name, o
		return s
	}
	byName := func(name string) buildState {
		i := slices.IndexFunc(st, func(s buildState) bool { return s.name == name })
		return st[i]
	}
	big, bigSl := scaleCluster(400)
	aff := byName("affinity timeout")
	aff.svcs = append(slices.Clone(aff.svcs),
		service("aff2", clusterIPs("198.51.100.77"), ports(port("dns", v1.ProtocolUDP, 53, 0)), clientIPAffinity(7)))
	return []buildState{
		byName("start"),
		withOpts("pod and service CIDRs", byName("start"), Options{
			Local:        LocalDetector{PodCIDRs: pfx("192.0.2.0/24", "2001:db8::/64")},
			ServiceCIDRs: pfx("198.51.100.0/24", "203.0.113.0/25", "2001:db8:1::/112"),
		}),
		withOpts("odd service CIDRs", byName("start"), Options{
			MasqueradeAll:   true,
			ServiceCIDRs:    pfx("203.0.113.0/25", "2001:db8:1::/64", "2001:db8:0::/64", "2001:db8:5::/33"),
			AffinityMapSize: 1000,
		}),
		withOpts("one service CIDR each", byName("start"), Options{ServiceCIDRs: pfx("198.51.100.0/24", "2001:db8:1::/33")}),
		withOpts("service CIDRs from zero", byName("start"), Options{ServiceCIDRs: pfx("0.0.0.0/1", "198.51.100.0/24", "::/0")}),
		byName("scale one to 70"),
		withOpts("two affinity timeouts", aff, Options{Local: LocalDetector{PodCIDRs: pfx("192.0.2.0/24")}}),
		withOpts("pods by bridge", aff, Options{Local: LocalDetector{Interface: "cni0"}}),
		withOpts("pods by interface prefix", byName("start"), Options{
			Local:        LocalDetector{Interface: "veth", InterfacePrefix: true},
			ServiceCIDRs: pfx("198.51.100.0/24"),
		}),
		{name: "400 Services", svcs: big, slices: bigSl, node: testNode, opts: Options{
			Local: LocalDetector{PodCIDRs: pfx("2001:db8::/32")},
		}},
		byName("all gone"),
	}
}

// TestRealSkeletonOverNetlinkListsAsNft: a table written over netlink alone
// (Rewrite: table, chains, rules with their anonymous sets, sets, maps and
// elements in one batch) lists exactly as the table nft writes from the
// same Ruleset, for every skeleton variant.
func TestRealSkeletonOverNetlinkListsAsNft(t *testing.T) {
	nft := inNetns(t)
	writer := NewNetlinkReloader(threadNetns(t))
	ctx := context.Background()
	for _, s := range skeletonVariants() {
		r := Build(s.svcs, s.slices, s.node, s.opts)
		if _, err := NewApplier(nft, BatchElements()).SyncFull(ctx, r); err != nil {
			t.Fatalf("%s: nft: %v", s.name, err)
		}
		want := listTable(t)
		wantFP, err := writer.Fingerprint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := writer.Rewrite(ctx, r); err != nil {
			t.Fatalf("%s: rewrite over netlink: %v", s.name, err)
		}
		if got := listTable(t); got != want {
			t.Errorf("%s: the table written over netlink differs from nft's:\n%s", s.name, lineDiff(want, got))
		}
		// The kernel's dumps of chains, rules and sets (handles, set
		// userdata, every expression attribute) are the same bytes too.
		if got, err := writer.Fingerprint(ctx); err != nil || !bytes.Equal(got, wantFP) {
			t.Errorf("%s: the kernel holds another skeleton than nft writes (err %v)", s.name, err)
		}
	}
}

// TestRealIPv6AffinityOverNetlink: nft 1.0.6 aborts on the IPv6 affinity
// record rule (its key and data need 15 of the 16 registers, and nft's
// register allocator asserts), so a table with an IPv6 ClientIP Service
// can only be written over netlink; nft then lists the rule as written.
func TestRealIPv6AffinityOverNetlink(t *testing.T) {
	inNetns(t)
	svcs := []*v1.Service{service("aff6", clusterIPs("2001:db8:1::7"), ports(port("http", v1.ProtocolTCP, 80, 0)), clientIPAffinity(60))}
	sl := []*discoveryv1.EndpointSlice{endpointSlice("aff6", "aff6-1", discoveryv1.AddressTypeIPv6, tcpHTTP,
		ep{"2001:db8:3::1", thisNode, ready})}
	r := Build(svcs, sl, testNode, Options{})
	if err := NewNetlinkReloader(threadNetns(t)).Rewrite(context.Background(), r); err != nil {
		t.Fatalf("rewrite over netlink: %v", err)
	}
	want := "meta l4proto { tcp, udp, sctp } update @aff6 { ip6 saddr . ct original ip6 daddr . meta l4proto . ct original proto-dst timeout 1m : ip6 daddr . th dport }"
	if got := listTable(t); !strings.Contains(got, "\t"+want+"\n") {
		t.Errorf("the IPv6 affinity record rule is not listed as written:\n%s", got)
	}
}
