package gobgp

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"

	herald "github.com/heraldlb/herald/bare-metal/bgp"
)

// Session timers GoBGP would otherwise default to 120 s and 30 s: a router
// that is not up yet when the agent starts, or a session reset by BFD,
// would then keep a node's routes away for minutes.
const (
	connectRetry           = 5 * time.Second
	idleHoldTimeAfterReset = 5 * time.Second
	// bfdPort is RFC 5881's single-hop BFD port.
	bfdPort = 3784
	// multihopTTL is the TTL of an eBGP multihop session: any distance.
	multihopTTL = 255
)

var families = []*api.Family{
	{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST},
	{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST},
}

// peerToAPI maps a session to GoBGP's peer configuration. Both unicast
// families are offered on every session (multiprotocol BGP): the router
// picks those it accepts.
func peerToAPI(p herald.PeerConfig) *api.Peer {
	out := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.PeerASN,
			LocalAsn:        p.LocalASN,
			AuthPassword:    p.Password,
			Description:     "herald BGPPeer " + p.Name,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:               seconds(p.HoldTime),
			KeepaliveInterval:      seconds(p.KeepaliveTime),
			ConnectRetry:           seconds(connectRetry),
			IdleHoldTimeAfterReset: seconds(idleHoldTimeAfterReset),
		}},
		Transport: &api.Transport{RemotePort: uint32(p.Port)},
	}
	if p.SourceAddress.IsValid() {
		out.Transport.LocalAddress = p.SourceAddress.String()
	}
	if p.EBGPMultihop {
		out.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: multihopTTL}
	}
	for _, f := range families {
		af := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}}
		if p.GracefulRestart.Enabled {
			af.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		out.AfiSafis = append(out.AfiSafis, af)
	}
	if p.GracefulRestart.Enabled {
		// Without the notification flag (RFC 8538), the Cease herald-agent
		// sends at shutdown makes the router drop the routes at once, as
		// it should after a deliberate withdrawal; only a session that
		// dies without one is helped by graceful restart.
		out.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(seconds(p.GracefulRestart.RestartTime))}
	}
	if p.BFD.Enabled {
		out.Bfd = &api.BfdPeerConfig{
			Enabled:                  true,
			Port:                     bfdPort,
			DesiredMinimumTxInterval: uint32(p.BFD.TransmitInterval.Microseconds()),
			RequiredMinimumReceive:   uint32(p.BFD.ReceiveInterval.Microseconds()),
			DetectionMultiplier:      uint32(p.BFD.DetectMultiplier),
		}
	}
	return out
}

func seconds(d time.Duration) uint64 { return uint64(d / time.Second) }

// fsmStates are GoBGP's finite state machine states, in its order.
var fsmStates = [...]herald.SessionState{
	bgp.BGP_FSM_IDLE: herald.StateIdle, bgp.BGP_FSM_CONNECT: herald.StateConnect, bgp.BGP_FSM_ACTIVE: herald.StateActive,
	bgp.BGP_FSM_OPENSENT: herald.StateOpenSent, bgp.BGP_FSM_OPENCONFIRM: herald.StateOpenConfirm,
	bgp.BGP_FSM_ESTABLISHED: herald.StateEstablished,
}

// fsmState maps GoBGP's finite state machine state, as its watch events
// carry it.
func fsmState(s bgp.FSMState) herald.SessionState {
	if s < 0 || int(s) >= len(fsmStates) {
		return herald.StateUnknown
	}
	return fsmStates[s]
}

// sessionState maps GoBGP's API session state, which numbers the same
// states from 1 (0 is unspecified).
func sessionState(s api.PeerState_SessionState) herald.SessionState {
	if s == api.PeerState_SESSION_STATE_UNSPECIFIED {
		return herald.StateUnknown
	}
	return fsmState(bgp.FSMState(s - 1))
}

func bfdState(enabled bool, s *api.BfdPeerState) herald.BFDState {
	if !enabled {
		return herald.BFDNone
	}
	switch s.GetSessionState() {
	case api.BfdSessionState_BFD_SESSION_STATE_UP:
		return herald.BFDUp
	case api.BfdSessionState_BFD_SESSION_STATE_INIT:
		return herald.BFDInit
	case api.BfdSessionState_BFD_SESSION_STATE_ADMIN_DOWN:
		return herald.BFDAdminDown
	}
	return herald.BFDDown
}

// family is the GoBGP family of a prefix.
func family(p netip.Prefix) bgp.Family {
	if p.Addr().Is4() {
		return bgp.RF_IPv4_UC
	}
	return bgp.RF_IPv6_UC
}

// localPath is the path GoBGP originates for prefix. Its next hop is
// unspecified, which GoBGP replaces per session with the session's local
// address: the node's address toward the peer.
func localPath(prefix netip.Prefix) (bgp.Family, bgp.NLRI, []bgp.PathAttributeInterface, error) {
	nlri, err := bgp.NewIPAddrPrefix(prefix)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("prefix %s: %w", prefix, err)
	}
	origin := bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)
	f := family(prefix)
	if f == bgp.RF_IPv4_UC {
		nh, err := bgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
		if err != nil {
			return 0, nil, nil, err
		}
		return f, nlri, []bgp.PathAttributeInterface{origin, nh}, nil
	}
	mp, err := bgp.NewPathAttributeMpReachNLRI(f, []bgp.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
	if err != nil {
		return 0, nil, nil, err
	}
	return f, nlri, []bgp.PathAttributeInterface{origin, mp}, nil
}

// actions are the export policy actions that give a peer's copy of a path
// its attributes.
func actions(a herald.Attributes) *api.Actions {
	out := &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT}
	if c := a.Communities(); len(c) > 0 {
		out.Community = &api.CommunityAction{Type: api.CommunityAction_TYPE_ADD, Communities: c}
	}
	if c := a.LargeCommunities(); len(c) > 0 {
		out.LargeCommunity = &api.CommunityAction{Type: api.CommunityAction_TYPE_ADD, Communities: c}
	}
	if a.HasLocalPref {
		out.LocalPref = &api.LocalPrefAction{Value: a.LocalPref}
	}
	if a.NextHop.IsValid() {
		out.Nexthop = &api.NexthopAction{Address: a.NextHop.String()}
	}
	return out
}
