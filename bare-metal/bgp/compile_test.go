package bgp

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/election"
)

func dur(s string) *metav1.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return &metav1.Duration{Duration: d}
}

func TestPeerConfigFromSpec(t *testing.T) {
	base := func(mutate ...func(*v1alpha1.BGPPeerSpec)) v1alpha1.BGPPeerSpec {
		s := v1alpha1.BGPPeerSpec{PeerAddress: "192.0.2.1", PeerASN: 64500, LocalASN: 64512}
		for _, m := range mutate {
			m(&s)
		}
		return s
	}
	defaults := PeerConfig{Name: "r", Address: netip.MustParseAddr("192.0.2.1"), Port: 179, PeerASN: 64500, LocalASN: 64512,
		HoldTime: 90 * time.Second, KeepaliveTime: 30 * time.Second}
	with := func(mutate func(*PeerConfig)) PeerConfig {
		p := defaults
		mutate(&p)
		return p
	}
	tests := []struct {
		name     string
		spec     v1alpha1.BGPPeerSpec
		password string
		want     PeerConfig
		invalid  bool
	}{
		{name: "defaults", spec: base(), want: defaults},
		{name: "every field", password: "s3cret", spec: base(func(s *v1alpha1.BGPPeerSpec) {
			s.PeerPort, s.LocalASN, s.HoldTime, s.KeepaliveTime = 1179, 4200000000, dur("9s"), dur("2s")
			s.PasswordSecret = &v1alpha1.SecretKeySelector{Name: "md5"}
			s.EBGPMultiHop, s.SourceAddress = true, "192.0.2.11"
			s.BFD = &v1alpha1.BFDProfile{ReceiveInterval: dur("100ms"), TransmitInterval: dur("150ms"), DetectMultiplier: 5}
			s.GracefulRestart = &v1alpha1.GracefulRestart{RestartTime: dur("30s")}
		}), want: with(func(p *PeerConfig) {
			p.Port, p.LocalASN, p.HoldTime, p.KeepaliveTime = 1179, 4200000000, 9*time.Second, 2*time.Second
			p.Password, p.EBGPMultihop, p.SourceAddress = "s3cret", true, netip.MustParseAddr("192.0.2.11")
			p.BFD = BFDConfig{Enabled: true, ReceiveInterval: 100 * time.Millisecond, TransmitInterval: 150 * time.Millisecond, DetectMultiplier: 5}
			p.GracefulRestart = GracefulRestartConfig{Enabled: true, RestartTime: 30 * time.Second}
		})},
		{name: "empty BFD and graceful restart turn them on with defaults", spec: base(func(s *v1alpha1.BGPPeerSpec) {
			s.BFD, s.GracefulRestart = &v1alpha1.BFDProfile{}, &v1alpha1.GracefulRestart{}
		}), want: with(func(p *PeerConfig) {
			p.BFD = BFDConfig{Enabled: true, ReceiveInterval: 300 * time.Millisecond, TransmitInterval: 300 * time.Millisecond, DetectMultiplier: 3}
			p.GracefulRestart = GracefulRestartConfig{Enabled: true, RestartTime: 120 * time.Second}
		})},
		{name: "keepalive defaults to a third of the hold time", spec: base(func(s *v1alpha1.BGPPeerSpec) { s.HoldTime = dur("3s") }),
			want: with(func(p *PeerConfig) { p.HoldTime, p.KeepaliveTime = 3*time.Second, time.Second })},
		{name: "in whole seconds", spec: base(func(s *v1alpha1.BGPPeerSpec) { s.HoldTime = dur("10s") }),
			want: with(func(p *PeerConfig) { p.HoldTime, p.KeepaliveTime = 10*time.Second, 3*time.Second })},
		{name: "IPv6 peer", spec: base(func(s *v1alpha1.BGPPeerSpec) { s.PeerAddress = "2001:db8::1" }),
			want: with(func(p *PeerConfig) { p.Address = netip.MustParseAddr("2001:db8::1") })},
		// What the CRD refuses, should it get through anyway.
		{name: "address with a zone", invalid: true, spec: base(func(s *v1alpha1.BGPPeerSpec) { s.PeerAddress = "fe80::1%eth0" })},
		{name: "ASN 0", invalid: true, spec: base(func(s *v1alpha1.BGPPeerSpec) { s.PeerASN = 0 })},
		{name: "ASN above 32 bits", invalid: true, spec: base(func(s *v1alpha1.BGPPeerSpec) { s.LocalASN = 1 << 32 })},
		{name: "hold time 1s", invalid: true, spec: base(func(s *v1alpha1.BGPPeerSpec) { s.HoldTime = dur("1s") })},
		{name: "hold time 0", invalid: true, spec: base(func(s *v1alpha1.BGPPeerSpec) { s.HoldTime = dur("0s") })},
		{name: "hold time not whole seconds", invalid: true, spec: base(func(s *v1alpha1.BGPPeerSpec) { s.HoldTime = dur("3500ms") })},
		{name: "keepalive not shorter than hold", invalid: true, spec: base(func(s *v1alpha1.BGPPeerSpec) {
			s.HoldTime, s.KeepaliveTime = dur("9s"), dur("9s")
		})},
		{name: "password Secret but an empty password", invalid: true, spec: base(func(s *v1alpha1.BGPPeerSpec) {
			s.PasswordSecret = &v1alpha1.SecretKeySelector{Name: "md5"}
		})},
		{name: "multihop on iBGP", invalid: true, spec: base(func(s *v1alpha1.BGPPeerSpec) { s.LocalASN, s.EBGPMultiHop = 64500, true })},
		{name: "source of the other family", invalid: true, spec: base(func(s *v1alpha1.BGPPeerSpec) { s.SourceAddress = "2001:db8::11" })},
		{name: "BFD interval too short", invalid: true, spec: base(func(s *v1alpha1.BGPPeerSpec) {
			s.BFD = &v1alpha1.BFDProfile{TransmitInterval: dur("1ms")}
		})},
		{name: "restart time beyond 12 bits", invalid: true, spec: base(func(s *v1alpha1.BGPPeerSpec) {
			s.GracefulRestart = &v1alpha1.GracefulRestart{RestartTime: dur("4096s")}
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PeerConfigFromSpec("r", tt.spec, tt.password)
			if tt.invalid {
				if !errors.Is(err, ErrInvalidSpec) {
					t.Fatalf("err = %v, want ErrInvalidSpec", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("PeerConfigFromSpec:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestPasswordRefDefaultsTheKey(t *testing.T) {
	name, key, ok := PasswordRef(v1alpha1.BGPPeerSpec{PasswordSecret: &v1alpha1.SecretKeySelector{Name: "md5"}})
	if !ok || name != "md5" || key != "password" {
		t.Errorf("PasswordRef = %q %q %v, want md5 password true", name, key, ok)
	}
	if _, _, ok := PasswordRef(v1alpha1.BGPPeerSpec{}); ok {
		t.Error("PasswordRef without a Secret reported one")
	}
}

func TestCompileAdvertisement(t *testing.T) {
	spec := v1alpha1.BGPAdvertisementSpec{
		IPAddressPools:      []string{"lab"},
		AggregationLength:   ptr.To[int32](24),
		AggregationLengthV6: ptr.To[int32](64),
		Communities:         []string{"64500:100", "no-export", "1:2"},
		LargeCommunities:    []string{"4200000000:1:2"},
		LocalPref:           ptr.To[int64](300),
		Peers:               []string{"r"},
		NodeSelectors:       []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": "a"}}},
	}
	a, err := CompileAdvertisement("x", spec)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := a.Attrs.Communities(), []string{"1:2", "64500:100", "65535:65281"}; !slices.Equal(got, want) {
		t.Errorf("communities %q, want %q", got, want)
	}
	if got := a.Attrs.LargeCommunities(); !slices.Equal(got, []string{"4200000000:1:2"}) {
		t.Errorf("large communities %q", got)
	}
	if !a.Attrs.HasLocalPref || a.Attrs.LocalPref != 300 {
		t.Errorf("local pref %d %v", a.Attrs.LocalPref, a.Attrs.HasLocalPref)
	}
	for addr, want := range map[string]string{"198.51.100.200": "198.51.100.0/24", "2001:db8:f::200": "2001:db8:f::/64"} {
		if got := a.Prefix(netip.MustParseAddr(addr)).String(); got != want {
			t.Errorf("Prefix(%s) = %s, want %s", addr, got, want)
		}
	}
	if !election.SelectsNode(a.NodeSelectors, map[string]string{"rack": "a"}) || election.SelectsNode(a.NodeSelectors, map[string]string{"rack": "b"}) {
		t.Error("node selectors do not select by rack")
	}

	def, err := CompileAdvertisement("every", v1alpha1.BGPAdvertisementSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if got := def.Prefix(netip.MustParseAddr("2001:db8:f::200")).String(); got != "2001:db8:f::200/128" {
		t.Errorf("default IPv6 prefix %s", got)
	}
	if !election.SelectsNode(def.NodeSelectors, nil) {
		t.Error("no node selector must select every node")
	}

	for name, bad := range map[string]v1alpha1.BGPAdvertisementSpec{
		"unknown selector operator": {NodeSelectors: []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "k", Operator: "Near"}}}}},
		"community half too big":    {Communities: []string{"70000:1"}},
		"large community two parts": {LargeCommunities: []string{"1:2"}},
		"aggregation 33":            {AggregationLength: ptr.To[int32](33)},
	} {
		if _, err := CompileAdvertisement("bad", bad); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%s: err = %v, want ErrInvalidSpec", name, err)
		}
	}
}
