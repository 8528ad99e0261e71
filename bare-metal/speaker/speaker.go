// Package speaker is the announcing half of herald-agent on bare metal: it
// watches Services, their EndpointSlices, Nodes, IPAddressPools and the
// advertisements, decides which of the Services' addresses this node
// announces, and drives the protocols that announce them: Layer 2 (ARP and
// NDP, one node per address, elected by package election) and BGP (every
// eligible node, package bgp). Each protocol is an announcer behind one
// interface, as MetalLB's speaker has its Protocol; one loop syncs them all
// from one view of the cluster. It reports the outcome on the Services
// (conditions herald.dev/Announced and herald.dev/BGPAdvertised), on the
// BGPPeers (per-node session status), in events and in metrics. Forwarding
// the traffic is the data plane's job (provider/agent), or kube-proxy's:
// the two are enabled separately.
package speaker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/heraldlb/herald/bare-metal/bgp"
	"github.com/heraldlb/herald/bare-metal/election"
	"github.com/heraldlb/herald/internal/kubeclient"
)

// Defaults of the optional Config fields.
const (
	DefaultReleaseTimeout = 2 * time.Second
	DefaultDrainTimeout   = 5 * time.Second
	DefaultJoinInterval   = 2 * time.Second
	// DefaultConvergeWait is how long a draining node keeps its sessions
	// after withdrawing: FRR acts on a withdrawal in under 100 ms, BIRD in
	// under 10 ms (measured; docs/benchmarks.md), and a loaded router
	// more slowly.
	DefaultConvergeWait = time.Second
	// DefaultSecretRefresh is how often password Secrets are read again.
	DefaultSecretRefresh = 10 * time.Second
	// pollInterval is how often the announcers are asked whether they need
	// a sync between events (Layer 2's fence: frames are checked when
	// sent, but reopening after a closure, and reporting it, needs someone
	// to look).
	pollInterval = 50 * time.Millisecond
)

// Config is what herald-agent's flags set.
type Config struct {
	// NodeName is this node; required.
	NodeName string
	// ClassOnly: Services without a loadBalancerClass are not herald's
	// (as herald-ccm's --load-balancer-class-only).
	ClassOnly bool
	// Fence bounds when this node may announce with Layer 2 at all.
	Fence election.FenceConfig
	// ReleaseTimeout bounds a Layer 2 make-before-break handover.
	ReleaseTimeout time.Duration
	// DrainTimeout bounds the graceful stop at shutdown, every protocol's.
	DrainTimeout time.Duration
	// JoinInterval is how often agents of selected nodes that are not
	// members are asked to join (after a partition heals, say).
	JoinInterval time.Duration
	// ConvergeWait is, for BGP, how long the node keeps its sessions (and
	// forwards) after withdrawing its routes at shutdown.
	ConvergeWait time.Duration
	// SecretNamespace is where BGPPeer password Secrets are read (the
	// agent's namespace).
	SecretNamespace string
	// SecretRefresh is how often referenced password Secrets are read.
	SecretRefresh time.Duration
}

// Membership is the liveness of the agents (membership.Membership).
type Membership interface {
	Members() map[string]election.Member
	Health() election.Health
	LastHeard() time.Time
	HealthScore() int
	Join(addrs []netip.Addr) (int, error)
	SetDraining(draining bool, timeout time.Duration) error
	Broadcast(payload []byte) error
	Leave(timeout time.Duration) error
}

// Announcer is a protocol that announces addresses on interfaces
// (layer2.Announcer).
type Announcer interface {
	// Set makes the announced addresses exactly want (interface -> addresses).
	Set(ctx context.Context, want map[string][]netip.Addr) error
	// Gratuitous announces addrs again, already in the set.
	Gratuitous(addrs ...netip.Addr) int
	Close() error
}

// ServiceCache reads the Services and EndpointSlices the speaker decides
// from out of the informer caches it shares with the data plane (see
// Deps.Informers), which hold in full only the Services a speaker reads.
type ServiceCache interface {
	// Services lists the Services held in full: those of type
	// LoadBalancer, and others still carrying status conditions.
	Services() []*v1.Service
	// Service returns one of those, or nil.
	Service(namespace, name string) *v1.Service
	// EndpointNodes lists the nodes with a ready endpoint of each of the
	// given Services.
	EndpointNodes(services []types.NamespacedName) map[types.NamespacedName][]string
}

// Deps are the speaker's connections to the outside world. The Layer 2
// ones (StartMembership, NewL2, Interfaces) and the BGP ones (NewBGP,
// Host) are set for the protocols that are on; at least one must be.
type Deps struct {
	// Source watches Nodes and answers whether the CRDs are served.
	Source kubeclient.Source
	// Dynamic reads herald's CRDs and password Secrets and writes the
	// Services' and BGPPeers' status.
	Dynamic dynamic.Interface
	// Informers provides Services and EndpointSlices; herald-agent shares
	// it with its data plane so the cluster's Services are cached once.
	Informers *kubeclient.Informers
	// Services reads Informers' caches (herald-agent's
	// agent.NewSpeakerCache): they hold what the data plane needs, not
	// typed objects a lister could return.
	Services ServiceCache
	// StartMembership joins the agents' membership, calling onChange on
	// every membership change and onMessage for every message.
	StartMembership func(onChange func(), onMessage func(from string, payload []byte)) (Membership, error)
	// NewL2 starts the ARP/NDP announcer; gate is the fence, to consult
	// before every frame.
	NewL2      func(gate func() bool) (Announcer, error)
	Interfaces Interfaces
	// NewBGP starts the BGP speaker, calling onEvent on every session
	// state change.
	NewBGP func(onEvent func(bgp.PeerEvent)) (bgp.Router, error)
	// Host answers BGP's questions about this node's addresses.
	Host       Host
	Recorder   record.EventRecorder
	Registerer prometheus.Registerer
	Clock      clock.WithTickerAndDelayedExecution
}

// announcer is one protocol: Layer 2 or BGP. The speaker's loop syncs
// every announcer from the same view of the cluster.
type announcer interface {
	// start brings the protocol up; ctx lasts until the end of the drain.
	start(ctx context.Context) error
	// sync announces what w says and returns when it must run again if
	// nothing happens before (zero: only on events).
	sync(ctx context.Context, w world) time.Time
	// poll, called every pollInterval between syncs, asks for a sync.
	poll(ctx context.Context) bool
	// startDrain begins a graceful stop: hand addresses over (Layer 2) or
	// withdraw them (BGP); drained reports when that is complete.
	startDrain(ctx context.Context)
	drained() bool
	// close stops the protocol.
	close(ctx context.Context)
}

// Speaker runs the announcements of one node.
type Speaker struct {
	cfg        Config
	deps       Deps
	clock      clock.WithTickerAndDelayedExecution
	cache      *cache
	announcers []announcer
	trigger    chan struct{}
	ready      atomic.Bool
}

// New validates cfg and wires a Speaker; nothing runs until Run.
func New(cfg Config, deps Deps) (*Speaker, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("speaker: node name is required")
	}
	if deps.Source == nil || deps.Dynamic == nil || deps.Informers == nil || deps.Services == nil || deps.Registerer == nil || deps.Recorder == nil {
		return nil, errors.New("speaker: Source, Dynamic, Informers, Services, Recorder and Registerer are required")
	}
	layer2 := deps.NewL2 != nil
	if layer2 && (deps.StartMembership == nil || deps.Interfaces == nil) {
		return nil, errors.New("speaker: Layer 2 needs StartMembership and Interfaces")
	}
	if deps.NewBGP != nil && deps.Host == nil {
		return nil, errors.New("speaker: BGP needs Host")
	}
	if !layer2 && deps.NewBGP == nil {
		return nil, errors.New("speaker: no protocol: set NewL2, NewBGP or both")
	}
	if deps.Clock == nil {
		deps.Clock = clock.RealClock{}
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.ReleaseTimeout, DefaultReleaseTimeout}, {&cfg.DrainTimeout, DefaultDrainTimeout}, {&cfg.JoinInterval, DefaultJoinInterval},
		{&cfg.ConvergeWait, DefaultConvergeWait}, {&cfg.SecretRefresh, DefaultSecretRefresh}} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	s := &Speaker{cfg: cfg, deps: deps, clock: deps.Clock, trigger: make(chan struct{}, 1)}
	var err error
	if s.cache, err = newCache(deps, cacheOptions{layer2: layer2, bgp: deps.NewBGP != nil}, s.requestSync); err != nil {
		return nil, fmt.Errorf("speaker: %w", err)
	}
	if layer2 {
		l2, err := newLayer2(s)
		if err != nil {
			return nil, fmt.Errorf("speaker: %w", err)
		}
		s.announcers = append(s.announcers, l2)
	}
	if deps.NewBGP != nil {
		b, err := newBGPAnnouncer(s)
		if err != nil {
			return nil, fmt.Errorf("speaker: %w", err)
		}
		s.announcers = append(s.announcers, b)
	}
	return s, nil
}

// requestSync asks for a sync; it never blocks.
func (s *Speaker) requestSync() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// HealthHandler serves /readyz (200 once the caches are synced and every
// protocol started: joined the membership, started the BGP speaker) and
// /livez (200 while the process serves).
func (s *Speaker) HealthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" && !s.ready.Load() {
			http.Error(w, "not ready: waiting for caches or the protocols to start", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
}
