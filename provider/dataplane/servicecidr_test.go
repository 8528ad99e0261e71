package dataplane

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestServiceCIDRsRejectRule: each family's block chain rejects new
// connections to its ServiceCIDRs, ranges masked, sorted and once each; no
// range, no rule.
func TestServiceCIDRsRejectRule(t *testing.T) {
	cidrs := []netip.Prefix{netip.MustParsePrefix("203.0.113.7/24"), netip.MustParsePrefix("2001:db8:f::/108"),
		netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.0/24")}
	r := Build(nil, nil, testNode, Options{ServiceCIDRs: cidrs})
	want := []string{
		"ct state new ip daddr { 198.51.100.0/24, 203.0.113.0/24 } " + verdictReject,
		"ct state new ip6 daddr { 2001:db8:f::/108 } " + verdictReject,
	}
	for _, rule := range want {
		if !slices.Contains(r.Chains[chainBlock].Rules, rule) {
			t.Errorf("block chain %q lacks %q", r.Chains[chainBlock].Rules, rule)
		}
	}
	for _, rule := range Build(nil, nil, testNode, Options{}).Chains[chainBlock].Rules {
		if strings.Contains(rule, "ct state new") {
			t.Errorf("without ServiceCIDRs the block chain has %q", rule)
		}
	}
}
