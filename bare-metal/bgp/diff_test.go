package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// plain paths have no attributes; tagged ones a community.
var plain, tagged = Attributes{}, NewAttributes([]uint32{64500<<16 | 100}, nil)

// table builds a Table from "peer prefix" strings with plain attributes,
// or with tagged ones when the entry ends in "+".
func table(entries ...string) Table {
	t := Table{}
	for _, e := range entries {
		peer, prefix, _ := strings.Cut(strings.TrimSuffix(e, "+"), " ")
		attrs := plain
		if strings.HasSuffix(e, "+") {
			attrs = tagged
		}
		t.Add(peer, netip.MustParsePrefix(prefix), attrs)
	}
	return t
}

func describe(cs []Change) []string {
	out := []string{}
	for _, c := range cs {
		verb := "advertise"
		if c.Withdraw {
			verb = "withdraw"
		}
		out = append(out, fmt.Sprintf("%s %s %s %s", verb, c.Peer, c.Prefix, c.Attrs))
	}
	return out
}

func TestDiff(t *testing.T) {
	tests := []struct {
		name               string
		desired, announced Table
		want               []string
	}{
		{name: "nothing either way", desired: table(), announced: table(), want: []string{}},
		{name: "new path", desired: table("a 198.51.100.200/32"), announced: table(),
			want: []string{"advertise a 198.51.100.200/32 {}"}},
		{name: "nothing changed", desired: table("a 198.51.100.200/32", "b 2001:db8:f::200/128"),
			announced: table("a 198.51.100.200/32", "b 2001:db8:f::200/128"), want: []string{}},
		{name: "gone path withdrawn", desired: table(), announced: table("a 198.51.100.200/32"),
			want: []string{"withdraw a 198.51.100.200/32 {}"}},
		{name: "per peer: the same prefix stays for one peer and goes for the other",
			desired:   table("a 198.51.100.200/32"),
			announced: table("a 198.51.100.200/32", "b 198.51.100.200/32"),
			want:      []string{"withdraw b 198.51.100.200/32 {}"}},
		{name: "new attributes are re-advertised, never withdrawn first",
			desired: table("a 198.51.100.200/32+"), announced: table("a 198.51.100.200/32"),
			want: []string{"advertise a 198.51.100.200/32 {communities=64500:100}"}},
		{name: "withdrawals come first, both sorted by peer then prefix",
			desired:   table("b 198.51.100.201/32", "a 2001:db8:f::200/128", "a 198.51.100.201/32"),
			announced: table("b 198.51.100.200/32", "a 198.51.100.200/32"),
			want: []string{
				"withdraw a 198.51.100.200/32 {}", "withdraw b 198.51.100.200/32 {}",
				"advertise a 198.51.100.201/32 {}", "advertise a 2001:db8:f::200/128 {}", "advertise b 198.51.100.201/32 {}",
			}},
		{name: "an aggregate and an address of it are different prefixes",
			desired: table("a 198.51.100.0/24"), announced: table("a 198.51.100.200/32"),
			want: []string{"withdraw a 198.51.100.200/32 {}", "advertise a 198.51.100.0/24 {}"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := describe(Diff(tt.desired, tt.announced)); !slices.Equal(got, tt.want) {
				t.Errorf("Diff:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestAttributesMerge(t *testing.T) {
	a := NewAttributes([]uint32{10<<16 | 1, 1<<16 | 2}, []LargeCommunity{{Global: 1, Local1: 2, Local2: 3}})
	a.LocalPref, a.HasLocalPref = 100, true
	b := NewAttributes([]uint32{2<<16 | 1, 1<<16 | 2, CommunityNoExport}, []LargeCommunity{{Global: 1, Local1: 2, Local2: 3}, {Local2: 1}})
	b.LocalPref, b.HasLocalPref = 200, true
	for _, m := range []Attributes{a.Merge(b), b.Merge(a)} {
		if got, want := m.Communities(), []string{"1:2", "2:1", "10:1", "65535:65281"}; !slices.Equal(got, want) {
			t.Errorf("communities %q, want %q (numeric order, no duplicates)", got, want)
		}
		if got, want := m.LargeCommunities(), []string{"0:0:1", "1:2:3"}; !slices.Equal(got, want) {
			t.Errorf("large communities %q, want %q", got, want)
		}
		if !m.HasLocalPref || m.LocalPref != 200 {
			t.Errorf("local pref %d (%v), want the higher, 200", m.LocalPref, m.HasLocalPref)
		}
	}
	if a.Merge(b) != b.Merge(a) {
		t.Errorf("Merge depends on the order: %s vs %s", a.Merge(b), b.Merge(a))
	}
	if got := plain.Merge(Attributes{}); got != plain {
		t.Errorf("merging nothing changed the attributes: %s", got)
	}
}

func peer(name, addr string, mutate ...func(*PeerConfig)) PeerConfig {
	p := PeerConfig{Name: name, Address: netip.MustParseAddr(addr), Port: 179, PeerASN: 64500, LocalASN: 64512,
		HoldTime: 90 * time.Second, KeepaliveTime: 30 * time.Second}
	for _, m := range mutate {
		m(&p)
	}
	return p
}

func TestDiffPeers(t *testing.T) {
	a, b := peer("a", "192.0.2.1"), peer("b", "192.0.2.2")
	withBFD := peer("a", "192.0.2.1", func(p *PeerConfig) { p.BFD = BFDConfig{Enabled: true, DetectMultiplier: 3} })
	moved := peer("a", "192.0.2.9")
	names := func(ps []PeerConfig) []string {
		out := []string{}
		for _, p := range ps {
			out = append(out, p.Name+"@"+p.Address.String())
		}
		return out
	}
	tests := []struct {
		name                string
		desired             []PeerConfig
		configured          []PeerConfig
		add, update, remove []string
	}{
		{name: "first sync opens every session", desired: []PeerConfig{b, a},
			add: []string{"a@192.0.2.1", "b@192.0.2.2"}, update: []string{}, remove: nil},
		{name: "unchanged", desired: []PeerConfig{a, b}, configured: []PeerConfig{a, b}, add: []string{}, update: []string{}},
		{name: "a timer changed: update", desired: []PeerConfig{withBFD}, configured: []PeerConfig{a},
			add: []string{}, update: []string{"a@192.0.2.1"}},
		{name: "the address changed: close and open", desired: []PeerConfig{moved}, configured: []PeerConfig{a},
			add: []string{"a@192.0.2.9"}, update: []string{}, remove: []string{"a"}},
		{name: "gone", desired: nil, configured: []PeerConfig{a, b}, add: []string{}, update: []string{}, remove: []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			configured := map[string]PeerConfig{}
			for _, p := range tt.configured {
				configured[p.Name] = p
			}
			got := DiffPeers(tt.desired, configured)
			if !slices.Equal(names(got.Add), tt.add) || !slices.Equal(names(got.Update), tt.update) || !slices.Equal(got.Remove, tt.remove) {
				t.Errorf("DiffPeers: add %q update %q remove %q; want %q %q %q",
					names(got.Add), names(got.Update), got.Remove, tt.add, tt.update, tt.remove)
			}
			if got.Empty() != (len(tt.add)+len(tt.update)+len(tt.remove) == 0) {
				t.Errorf("Empty() = %v", got.Empty())
			}
		})
	}
}
