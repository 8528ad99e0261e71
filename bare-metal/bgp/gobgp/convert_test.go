package gobgp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	herald "github.com/heraldlb/herald/bare-metal/bgp"
)

// basePeer is what GoBGP gets for a BGPPeer with only the required fields:
// both unicast families, 90 s hold time, herald's faster retry timers.
func basePeer() *api.Peer {
	return &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: "192.0.2.1", PeerAsn: 64500, LocalAsn: 64512, Description: "herald BGPPeer r"},
		Timers: &api.Timers{Config: &api.TimersConfig{HoldTime: 90, KeepaliveInterval: 30, ConnectRetry: 5,
			IdleHoldTimeAfterReset: 5}},
		Transport: &api.Transport{RemotePort: 179},
		AfiSafis: []*api.AfiSafi{
			{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Enabled: true}},
			{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}, Enabled: true}},
		},
	}
}

func secs(n int) *metav1.Duration { return &metav1.Duration{Duration: time.Duration(n) * time.Second} }

func millis(n int) *metav1.Duration {
	return &metav1.Duration{Duration: time.Duration(n) * time.Millisecond}
}

// TestBGPPeerToGoBGP maps BGPPeer specs through both steps, CRD to
// PeerConfig (package bgp) and PeerConfig to GoBGP's configuration, and
// compares with the configuration GoBGP must get.
func TestBGPPeerToGoBGP(t *testing.T) {
	tests := []struct {
		name     string
		spec     func(*v1alpha1.BGPPeerSpec)
		password string
		want     func(*api.Peer)
	}{
		{name: "required fields only", spec: func(*v1alpha1.BGPPeerSpec) {}, want: func(*api.Peer) {}},
		{name: "port, timers, password, source, multihop",
			spec: func(s *v1alpha1.BGPPeerSpec) {
				s.PeerPort, s.HoldTime, s.KeepaliveTime = 1179, secs(9), secs(2)
				s.PasswordSecret = &v1alpha1.SecretKeySelector{Name: "md5", Key: "password"}
				s.SourceAddress, s.EBGPMultiHop = "192.0.2.11", true
			},
			password: "s3cret",
			want: func(p *api.Peer) {
				p.Transport = &api.Transport{RemotePort: 1179, LocalAddress: "192.0.2.11"}
				p.Timers.Config.HoldTime, p.Timers.Config.KeepaliveInterval = 9, 2
				p.Conf.AuthPassword = "s3cret"
				p.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: 255}
			}},
		{name: "BFD in microseconds on the single-hop port",
			spec: func(s *v1alpha1.BGPPeerSpec) {
				s.BFD = &v1alpha1.BFDProfile{ReceiveInterval: millis(100), TransmitInterval: millis(150), DetectMultiplier: 4}
			},
			want: func(p *api.Peer) {
				p.Bfd = &api.BfdPeerConfig{Enabled: true, Port: 3784, DesiredMinimumTxInterval: 150000,
					RequiredMinimumReceive: 100000, DetectionMultiplier: 4}
			}},
		{name: "graceful restart on both families, without the notification flag",
			spec: func(s *v1alpha1.BGPPeerSpec) {
				s.GracefulRestart = &v1alpha1.GracefulRestart{RestartTime: secs(30)}
			},
			want: func(p *api.Peer) {
				p.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: 30}
				for _, af := range p.AfiSafis {
					af.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
				}
			}},
		{name: "iBGP over IPv6",
			spec: func(s *v1alpha1.BGPPeerSpec) { s.PeerAddress, s.PeerASN = "2001:db8::1", 64512 },
			want: func(p *api.Peer) { p.Conf.NeighborAddress, p.Conf.PeerAsn = "2001:db8::1", 64512 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := v1alpha1.BGPPeerSpec{PeerAddress: "192.0.2.1", PeerASN: 64500, LocalASN: 64512}
			tt.spec(&spec)
			cfg, err := herald.PeerConfigFromSpec("r", spec, tt.password)
			if err != nil {
				t.Fatal(err)
			}
			want := basePeer()
			tt.want(want)
			if got := peerToAPI(cfg); !proto.Equal(got, want) {
				t.Errorf("GoBGP peer:\n got %s\nwant %s", prototext.Format(got), prototext.Format(want))
			}
		})
	}
}

func TestActions(t *testing.T) {
	attrs := herald.NewAttributes([]uint32{64500<<16 | 100, herald.CommunityNoExport}, []herald.LargeCommunity{{Global: 4200000000, Local1: 1, Local2: 2}})
	attrs.LocalPref, attrs.HasLocalPref = 300, true
	attrs.NextHop = netip.MustParseAddr("2001:db8::11")
	want := &api.Actions{
		RouteAction:    api.RouteAction_ROUTE_ACTION_ACCEPT,
		Community:      &api.CommunityAction{Type: api.CommunityAction_TYPE_ADD, Communities: []string{"64500:100", "65535:65281"}},
		LargeCommunity: &api.CommunityAction{Type: api.CommunityAction_TYPE_ADD, Communities: []string{"4200000000:1:2"}},
		LocalPref:      &api.LocalPrefAction{Value: 300},
		Nexthop:        &api.NexthopAction{Address: "2001:db8::11"},
	}
	if got := actions(attrs); !proto.Equal(got, want) {
		t.Errorf("actions:\n got %s\nwant %s", prototext.Format(got), prototext.Format(want))
	}
	if got := actions(herald.Attributes{}); !proto.Equal(got, &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT}) {
		t.Errorf("plain attributes: %s", prototext.Format(got))
	}
}
