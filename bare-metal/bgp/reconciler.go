package bgp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// Router is a BGP speaker as herald-agent drives it: sessions by peer name,
// and paths advertised to one peer at a time. bgp/gobgp implements it over
// an embedded GoBGP; tests use a fake. Every method is idempotent.
type Router interface {
	// AddPeer opens a session; UpdatePeer changes one (the router may
	// reset it); RemovePeer closes one and forgets what was advertised
	// to it.
	AddPeer(ctx context.Context, p PeerConfig) error
	UpdatePeer(ctx context.Context, p PeerConfig) error
	RemovePeer(ctx context.Context, name string) error
	// Advertise sends prefix to peer with attrs (replacing earlier
	// attributes); Withdraw takes it back. Either may leave work for
	// Flush.
	Advertise(ctx context.Context, peer string, prefix netip.Prefix, attrs Attributes) error
	Withdraw(ctx context.Context, peer string, prefix netip.Prefix) error
	// Flush finishes what Advertise and Withdraw left, e.g. re-sending a
	// peer's routes after its export policy changed.
	Flush(ctx context.Context) error
	// Peers reports every session's state.
	Peers() []PeerStatus
	// Close ends every session with a Cease notification and stops the
	// speaker; it does not withdraw first (see Reconciler.WithdrawAll).
	Close(ctx context.Context) error
}

// ErrUnknownPeer is returned for a path to a peer that is not configured.
var ErrUnknownPeer = errors.New("bgp: unknown peer")

// Reconciler makes a Router's sessions and paths match the desired ones
// through the smallest set of changes (Diff, DiffPeers), remembering what
// it configured. A failed step is retried by the next Reconcile; the rest
// is applied regardless.
type Reconciler struct {
	router    Router
	peers     map[string]PeerConfig
	announced Table
}

// NewReconciler drives router, which must start empty.
func NewReconciler(router Router) *Reconciler {
	return &Reconciler{router: router, peers: map[string]PeerConfig{}, announced: Table{}}
}

// Reconcile configures exactly peers and advertises exactly desired. Paths
// to a peer that is not among peers (or could not be configured) are not
// advertised.
func (r *Reconciler) Reconcile(ctx context.Context, peers []PeerConfig, desired Table) error {
	errs := r.reconcilePeers(ctx, peers)
	want := Table{}
	for peer, paths := range desired {
		if _, ok := r.peers[peer]; ok {
			want[peer] = paths
		}
	}
	for _, c := range Diff(want, r.announced) {
		if c.Withdraw {
			if err := r.router.Withdraw(ctx, c.Peer, c.Prefix); err != nil {
				errs = append(errs, fmt.Errorf("withdrawing %s from %s: %w", c.Prefix, c.Peer, err))
				continue
			}
			delete(r.announced[c.Peer], c.Prefix)
			if len(r.announced[c.Peer]) == 0 {
				delete(r.announced, c.Peer)
			}
			continue
		}
		if err := r.router.Advertise(ctx, c.Peer, c.Prefix, c.Attrs); err != nil {
			errs = append(errs, fmt.Errorf("advertising %s to %s: %w", c.Prefix, c.Peer, err))
			continue
		}
		if r.announced[c.Peer] == nil {
			r.announced[c.Peer] = map[netip.Prefix]Attributes{}
		}
		r.announced[c.Peer][c.Prefix] = c.Attrs
	}
	if err := r.router.Flush(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (r *Reconciler) reconcilePeers(ctx context.Context, peers []PeerConfig) []error {
	var errs []error
	changes := DiffPeers(peers, r.peers)
	for _, name := range changes.Remove {
		if err := r.router.RemovePeer(ctx, name); err != nil {
			errs = append(errs, fmt.Errorf("closing the session with %s: %w", name, err))
			continue
		}
		delete(r.peers, name)
		delete(r.announced, name)
	}
	for _, p := range changes.Add {
		if err := r.router.AddPeer(ctx, p); err != nil {
			errs = append(errs, fmt.Errorf("opening the session with %s (%s): %w", p.Name, p.Address, err))
			continue
		}
		r.peers[p.Name] = p
	}
	for _, p := range changes.Update {
		if err := r.router.UpdatePeer(ctx, p); err != nil {
			errs = append(errs, fmt.Errorf("reconfiguring the session with %s (%s): %w", p.Name, p.Address, err))
			continue
		}
		r.peers[p.Name] = p
	}
	return errs
}

// WithdrawAll withdraws every path while keeping the sessions up: the
// first step of a graceful shutdown.
func (r *Reconciler) WithdrawAll(ctx context.Context) error {
	return r.Reconcile(ctx, r.Peers(), Table{})
}

// Peers returns the configured sessions.
func (r *Reconciler) Peers() []PeerConfig {
	out := make([]PeerConfig, 0, len(r.peers))
	for _, name := range sortedKeys(r.peers) {
		out = append(out, r.peers[name])
	}
	return out
}

// Advertised returns how many prefixes go to peer.
func (r *Reconciler) Advertised(peer string) int { return r.announced.Count(peer) }

// Announced returns a copy of what is advertised.
func (r *Reconciler) Announced() Table {
	out := Table{}
	for peer, paths := range r.announced {
		out[peer] = maps.Clone(paths)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
