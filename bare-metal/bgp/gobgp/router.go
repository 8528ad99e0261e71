// Package gobgp is herald's BGP speaker: a bgp.Router over GoBGP v4
// (github.com/osrg/gobgp/v4) embedded in herald-agent. It is the only
// package that imports GoBGP. v4, not v3: only v4 implements BFD.
//
// GoBGP keeps one RIB for all sessions, while herald advertises per peer
// (a BGPAdvertisement may name some peers, with its own communities). So
// each prefix is in the RIB once, while any peer wants it, and what each
// peer gets is decided by the global export policy: per peer and set of
// attributes, a policy whose one statement matches the peer (a neighbor
// set) and the prefixes (a prefix set) and accepts them with those
// attributes; everything else is rejected. Adding or removing a prefix
// edits a prefix set; a path already in the RIB whose acceptance or
// attributes changed for a peer is re-sent to that peer by a soft reset
// (Flush). Routes the routers send are rejected on import: herald-agent
// only advertises.
package gobgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/server"

	herald "github.com/heraldlb/herald/bare-metal/bgp"
)

// globalASN is GoBGP's global AS number. Every session sets its own local
// AS (BGPPeer.spec.localASN), which is what goes on the wire, so this one
// is never seen; it is the last private 32-bit ASN (RFC 6996).
const globalASN = 4294967294

// Options configure New.
type Options struct {
	// RouterID is the BGP identifier, an IPv4 address (the node's, by
	// convention); required even on an IPv6-only node.
	RouterID netip.Addr
	// ListenPort makes the speaker accept sessions on that TCP port (179
	// for routers that only connect); 0 listens nowhere and every session
	// is opened by the node.
	ListenPort int32
	// Logger receives GoBGP's logs; at V(4) and above, its debug logs.
	Logger logr.Logger
	// OnPeerEvent is called, without blocking, on every session state
	// change.
	OnPeerEvent func(herald.PeerEvent)
}

// Router is a bgp.Router over an embedded GoBGP server.
type Router struct {
	server *server.BgpServer
	opts   Options
	// ctx ends with the Router (Close); background work (enableBFD) runs
	// under it, counted by background.
	ctx        context.Context
	cancel     context.CancelFunc
	background sync.WaitGroup

	mu    sync.Mutex
	peers map[string]*peer // by name
	// inRIB counts, per prefix, the peers it is advertised to: the path is
	// in GoBGP's RIB while the count is above zero.
	inRIB map[netip.Prefix]int
	// resend are the peers whose export policy changed for a path already
	// in the RIB: Flush soft-resets them.
	resend map[string]bool
	seq    int
	// states is each session's last state, by address, from the watch.
	states map[netip.Addr]herald.SessionState
}

// peer is a configured session and what it advertises.
type peer struct {
	cfg herald.PeerConfig
	// bfdOn: GoBGP runs BFD for the session (see syncBFD).
	bfdOn bool
	// neighborSet names the GoBGP neighbor set matching this peer.
	neighborSet string
	// groups are the peer's export statements, by family and attributes.
	groups map[groupKey]*group
	// paths are the advertised prefixes with the group each is in.
	paths map[netip.Prefix]groupKey
}

// ErrRouterID means Options.RouterID is not an IPv4 address.
var ErrRouterID = errors.New("gobgp: the router ID must be an IPv4 address")

// New starts the speaker: GoBGP serving, no sessions, import rejected and
// export rejected unless a peer's policy accepts.
func New(ctx context.Context, opts Options) (*Router, error) {
	if !opts.RouterID.Is4() {
		return nil, fmt.Errorf("%w: %v", ErrRouterID, opts.RouterID)
	}
	level := &slog.LevelVar{}
	level.Set(slog.LevelWarn)
	if opts.Logger.V(4).Enabled() {
		level.Set(slog.LevelDebug)
	}
	s := server.NewBgpServer(server.LoggerOption(slog.New(logr.ToSlogHandler(opts.Logger)), level))
	go s.Serve()
	port := opts.ListenPort
	if port == 0 {
		port = -1 // GoBGP: no listener
	}
	if err := s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: globalASN, RouterId: opts.RouterID.String(), ListenPort: port,
	}}); err != nil {
		s.Stop()
		return nil, fmt.Errorf("gobgp: starting: %w", err)
	}
	r := &Router{server: s, opts: opts, peers: map[string]*peer{}, inRIB: map[netip.Prefix]int{},
		resend: map[string]bool{}, states: map[netip.Addr]herald.SessionState{}}
	if err := r.defaultPolicies(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	r.ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	cancel := r.cancel
	if err := s.WatchEvent(r.ctx, server.WatchEventMessageCallbacks{OnPeerUpdate: r.onPeerUpdate}, server.WatchPeer()); err != nil {
		cancel()
		s.Stop()
		return nil, fmt.Errorf("gobgp: watching sessions: %w", err)
	}
	return r, nil
}

// importPolicy is the one import policy: GoBGP applies import policies to
// the paths it originates too, so those are accepted and everything the
// routers send is rejected.
const importPolicy = "herald-import-local-only"

// defaultPolicies rejects every received route and, until a peer's policy
// accepts one, every path on export.
func (r *Router) defaultPolicies(ctx context.Context) error {
	local := &api.Policy{Name: importPolicy, Statements: []*api.Statement{{Name: importPolicy,
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT}}}}
	if err := r.server.AddPolicy(ctx, &api.AddPolicyRequest{Policy: local}); err != nil {
		return fmt.Errorf("gobgp: import policy: %w", err)
	}
	if err := r.server.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Direction: api.PolicyDirection_POLICY_DIRECTION_IMPORT, Policies: []*api.Policy{{Name: importPolicy}},
		DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
	}}); err != nil {
		return fmt.Errorf("gobgp: import policy: %w", err)
	}
	return r.assignExport(ctx)
}

func (r *Router) onPeerUpdate(ev *apiutil.WatchEventMessage_PeerEvent, at time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	addr := ev.Peer.State.NeighborAddress
	to := fsmState(ev.Peer.State.SessionState)
	r.mu.Lock()
	from := r.states[addr]
	r.states[addr] = to
	name, bfdChange := "", false
	for n, p := range r.peers {
		if p.cfg.Address == addr {
			name, bfdChange = n, p.cfg.BFD.Enabled && p.bfdOn != (to == herald.StateEstablished)
		}
	}
	r.mu.Unlock()
	if bfdChange {
		// Not on the watcher's goroutine: UpdatePeer waits for the server's
		// loop, which may be waiting to deliver the next event.
		r.background.Go(func() { r.syncBFD(name) })
	}
	if from == to || name == "" || r.opts.OnPeerEvent == nil {
		return
	}
	r.opts.OnPeerEvent(herald.PeerEvent{Name: name, Address: addr, From: from, To: to,
		Reason: ev.Peer.State.DisconnectMessage, At: at})
}

// AddPeer implements bgp.Router.
func (r *Router) AddPeer(ctx context.Context, cfg herald.PeerConfig) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.peers[cfg.Name]; ok {
		return r.updatePeerLocked(ctx, cfg)
	}
	p := &peer{cfg: cfg, neighborSet: "herald-peer-" + cfg.Name, groups: map[groupKey]*group{}, paths: map[netip.Prefix]groupKey{}}
	if err := r.server.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: p.neighborSet,
		List: []string{netip.PrefixFrom(cfg.Address, cfg.Address.BitLen()).String()},
	}, Replace: true}); err != nil {
		return fmt.Errorf("neighbor set of %s: %w", cfg.Name, err)
	}
	if err := r.server.AddPeer(ctx, &api.AddPeerRequest{Peer: peerToAPI(withoutBFD(cfg))}); err != nil {
		return fmt.Errorf("gobgp: adding peer %s: %w", cfg.Address, err)
	}
	r.peers[cfg.Name] = p
	return nil
}

// withoutBFD is cfg with BFD off: a session starts without it and syncBFD
// turns it on once the session is established, and off again when the
// session goes down. FRR's bgpd replaces its BFD session when the BGP
// session comes up (the new one is keyed by the local address and
// interface, unknown before): a BFD session already up on the node's side
// would see the old one's AdminDown and the new one's Down, and GoBGP
// resets BGP on either. And GoBGP resets a session that comes up while its
// BFD session is still down from the last failure, again and again until
// BFD happens to come up first. Started after BGP, BFD comes up once.
func withoutBFD(cfg herald.PeerConfig) herald.PeerConfig {
	cfg.BFD = herald.BFDConfig{}
	return cfg
}

// syncBFD runs BFD for a session with BFD configured exactly while it is
// established, changing GoBGP's peer in place (GoBGP adds and removes the
// BFD peer without resetting the session). It acts on the session's state
// when it runs, so calls may come in any order.
func (r *Router) syncBFD(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.peers[name]
	if !ok {
		return // gone since
	}
	want := p.cfg.BFD.Enabled && r.states[p.cfg.Address] == herald.StateEstablished
	if want == p.bfdOn {
		return
	}
	cfg := p.cfg
	if !want {
		cfg = withoutBFD(cfg)
	}
	if _, err := r.server.UpdatePeer(r.ctx, &api.UpdatePeerRequest{Peer: peerToAPI(cfg)}); err != nil {
		if r.ctx.Err() == nil {
			r.opts.Logger.Error(err, "Turning BFD on or off failed", "peer", name, "address", p.cfg.Address, "bfd", want)
		}
		return
	}
	p.bfdOn = want
}

// UpdatePeer implements bgp.Router: the session is closed and opened again
// with the new settings (GoBGP applies some changes in place but not all,
// e.g. not a new password, and a reset is what the router would need for
// most of them anyway). What the peer is advertised stays.
func (r *Router) UpdatePeer(ctx context.Context, cfg herald.PeerConfig) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.updatePeerLocked(ctx, cfg)
}

func (r *Router) updatePeerLocked(ctx context.Context, cfg herald.PeerConfig) error {
	p, ok := r.peers[cfg.Name]
	if !ok {
		return fmt.Errorf("%w: %s", herald.ErrUnknownPeer, cfg.Name)
	}
	if p.cfg.Address != cfg.Address {
		return fmt.Errorf("gobgp: peer %s moved from %s to %s: remove and add it", cfg.Name, p.cfg.Address, cfg.Address)
	}
	if err := r.server.DeletePeer(ctx, &api.DeletePeerRequest{Address: cfg.Address.String()}); err != nil {
		return fmt.Errorf("gobgp: resetting peer %s: %w", cfg.Address, err)
	}
	if err := r.server.AddPeer(ctx, &api.AddPeerRequest{Peer: peerToAPI(withoutBFD(cfg))}); err != nil {
		return fmt.Errorf("gobgp: re-adding peer %s: %w", cfg.Address, err)
	}
	p.cfg, p.bfdOn = cfg, false
	return nil
}

// RemovePeer implements bgp.Router.
func (r *Router) RemovePeer(ctx context.Context, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.peers[name]
	if !ok {
		return nil
	}
	if err := r.server.DeletePeer(ctx, &api.DeletePeerRequest{Address: p.cfg.Address.String()}); err != nil {
		return fmt.Errorf("gobgp: removing peer %s: %w", p.cfg.Address, err)
	}
	var errs []error
	for prefix := range p.paths {
		errs = append(errs, r.withdrawLocked(ctx, p, prefix))
	}
	if err := r.server.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: p.neighborSet}, All: true}); err != nil {
		errs = append(errs, fmt.Errorf("neighbor set of %s: %w", name, err))
	}
	delete(r.peers, name)
	delete(r.resend, name)
	delete(r.states, p.cfg.Address)
	return errors.Join(errs...)
}

// Advertise implements bgp.Router.
func (r *Router) Advertise(ctx context.Context, name string, prefix netip.Prefix, attrs herald.Attributes) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.peers[name]
	if !ok {
		return fmt.Errorf("%w: %s", herald.ErrUnknownPeer, name)
	}
	key := groupKey{v6: prefix.Addr().Is6(), attrs: attrs}
	old, had := p.paths[prefix]
	if had && old == key {
		return nil
	}
	if err := r.addToGroup(ctx, p, key, prefix); err != nil {
		return err
	}
	if had {
		// New attributes: the path is in the RIB; the peer gets it again
		// with the new ones, with no withdrawal in between.
		p.paths[prefix] = key
		r.resend[name] = true
		return r.removeFromGroup(ctx, p, old, prefix)
	}
	p.paths[prefix] = key
	if r.inRIB[prefix] > 0 {
		r.inRIB[prefix]++
		r.resend[name] = true
		return nil
	}
	if err := r.addPath(prefix); err != nil {
		delete(p.paths, prefix)
		return errors.Join(err, r.removeFromGroup(ctx, p, key, prefix))
	}
	r.inRIB[prefix] = 1
	return nil
}

// Withdraw implements bgp.Router.
func (r *Router) Withdraw(ctx context.Context, name string, prefix netip.Prefix) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.peers[name]
	if !ok {
		return nil
	}
	return r.withdrawLocked(ctx, p, prefix)
}

func (r *Router) withdrawLocked(ctx context.Context, p *peer, prefix netip.Prefix) error {
	key, ok := p.paths[prefix]
	if !ok {
		return nil
	}
	if r.inRIB[prefix] == 1 {
		// The last peer: deleting the path sends the withdrawal.
		if err := r.deletePath(prefix); err != nil {
			return err
		}
		delete(r.inRIB, prefix)
	} else {
		r.inRIB[prefix]--
		r.resend[p.cfg.Name] = true
	}
	delete(p.paths, prefix)
	return r.removeFromGroup(ctx, p, key, prefix)
}

// Flush implements bgp.Router: a soft reset out re-evaluates the export
// policy for each peer whose policy changed for paths already in the RIB,
// sending new attributes and withdrawing what it now rejects.
func (r *Router) Flush(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for name := range r.resend {
		p, ok := r.peers[name]
		if ok {
			err := r.server.ResetPeer(ctx, &api.ResetPeerRequest{Address: p.cfg.Address.String(), Soft: true,
				Direction: api.ResetPeerRequest_DIRECTION_OUT})
			if err != nil {
				errs = append(errs, fmt.Errorf("gobgp: re-sending routes to %s: %w", name, err))
				continue
			}
		}
		delete(r.resend, name)
	}
	return errors.Join(errs...)
}

func (r *Router) addPath(prefix netip.Prefix) error {
	f, nlri, attrs, err := localPath(prefix)
	if err != nil {
		return err
	}
	if _, err := r.server.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{{Family: f, Nlri: nlri, Attrs: attrs}}}); err != nil {
		return fmt.Errorf("gobgp: adding path %s: %w", prefix, err)
	}
	return nil
}

func (r *Router) deletePath(prefix netip.Prefix) error {
	f, nlri, attrs, err := localPath(prefix)
	if err != nil {
		return err
	}
	if err := r.server.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{{Family: f, Nlri: nlri, Attrs: attrs}}}); err != nil {
		return fmt.Errorf("gobgp: deleting path %s: %w", prefix, err)
	}
	return nil
}

// Peers implements bgp.Router.
func (r *Router) Peers() []herald.PeerStatus {
	r.mu.Lock()
	byAddr := map[netip.Addr]herald.PeerConfig{}
	for _, p := range r.peers {
		byAddr[p.cfg.Address] = p.cfg
	}
	r.mu.Unlock()
	var out []herald.PeerStatus
	err := r.server.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
		addr, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		cfg, ok := byAddr[addr]
		if err != nil || !ok {
			return
		}
		st := herald.PeerStatus{Name: cfg.Name, Address: addr, State: sessionState(p.GetState().GetSessionState()),
			BFD: bfdState(cfg.BFD.Enabled, p.GetState().GetBfdState()), LastError: p.GetState().GetDisconnectMessage()}
		timers := p.GetTimers().GetState()
		if st.State == herald.StateEstablished && timers.GetUptime() != nil {
			st.Since = timers.GetUptime().AsTime()
		} else if timers.GetDowntime() != nil {
			st.Since = timers.GetDowntime().AsTime()
		}
		out = append(out, st)
	})
	if err != nil {
		return nil
	}
	return out
}

// Close implements bgp.Router: every session gets an administrative
// shutdown (a Cease notification with a message, RFC 8203), then GoBGP
// stops.
func (r *Router) Close(ctx context.Context) error {
	r.mu.Lock()
	var errs []error
	for _, p := range r.peers {
		if err := r.server.ShutdownPeer(ctx, &api.ShutdownPeerRequest{Address: p.cfg.Address.String(),
			Communication: "herald-agent is shutting down"}); err != nil {
			errs = append(errs, fmt.Errorf("gobgp: shutting down the session with %s: %w", p.cfg.Address, err))
		}
	}
	r.mu.Unlock()
	r.cancel()
	r.background.Wait()
	r.server.Stop()
	return errors.Join(errs...)
}

var _ herald.Router = (*Router)(nil)
