// Package speaker is the announcing half of herald-agent on bare metal: it
// watches Services, their EndpointSlices, Nodes, IPAddressPools and
// L2Advertisements, elects (package election) which node announces each
// Service's addresses, and drives the protocol that announces them (Layer 2
// today: ARP and NDP). It reports the outcome on the Services (condition
// herald.dev/Announced, events) and in metrics. Forwarding the traffic is
// the data plane's job (provider/agent), or kube-proxy's: the two are
// enabled separately.
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
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/heraldlb/herald/bare-metal/election"
)

// Defaults of the optional Config fields.
const (
	DefaultReleaseTimeout = 2 * time.Second
	DefaultDrainTimeout   = 5 * time.Second
	DefaultJoinInterval   = 2 * time.Second
	// fenceTick is how often the fence is re-evaluated between events:
	// frames are checked when sent, but reopening after a closure (and
	// reporting it) needs someone to look.
	fenceTick = 50 * time.Millisecond
)

// Config is what herald-agent's flags set.
type Config struct {
	// NodeName is this node; required.
	NodeName string
	// ClassOnly: Services without a loadBalancerClass are not herald's
	// (as herald-ccm's --load-balancer-class-only).
	ClassOnly bool
	// Fence bounds when this node may announce at all.
	Fence election.FenceConfig
	// ReleaseTimeout bounds a make-before-break handover.
	ReleaseTimeout time.Duration
	// DrainTimeout bounds the handover at shutdown.
	DrainTimeout time.Duration
	// JoinInterval is how often agents of selected nodes that are not
	// members are asked to join (after a partition heals, say).
	JoinInterval time.Duration
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

// Deps are the speaker's connections to the outside world.
type Deps struct {
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	// Informers provides Services and EndpointSlices; herald-agent shares
	// it with its data plane so the cluster's Services are cached once.
	Informers informers.SharedInformerFactory
	// StartMembership joins the agents' membership, calling onChange on
	// every membership change and onMessage for every message.
	StartMembership func(onChange func(), onMessage func(from string, payload []byte)) (Membership, error)
	// NewL2 starts the ARP/NDP announcer; gate is the fence, to consult
	// before every frame.
	NewL2      func(gate func() bool) (Announcer, error)
	Interfaces Interfaces
	Recorder   record.EventRecorder
	Registerer prometheus.Registerer
	Clock      clock.WithTickerAndDelayedExecution
}

// Speaker runs the announcements of one node.
type Speaker struct {
	cfg     Config
	deps    Deps
	clock   clock.WithTickerAndDelayedExecution
	fence   *election.Fence
	planner *election.Planner
	metrics *metrics
	cache   *cache
	writer  *conditionWriter

	membership Membership
	l2         Announcer
	trigger    chan struct{}
	notices    chan notice
	// announcedOn remembers the interfaces of each announced address, so a
	// handover keeps using them after the election moved the address away.
	announcedOn map[netip.Addr][]string
	// expected and fenceWasOpen are the last sync's quorum set and fence
	// state, for the fence checks between syncs.
	expected     []string
	fenceWasOpen bool
	lastJoin     time.Time
	joining      chan struct{}
	ready        atomic.Bool
}

type notice struct {
	from  string
	addrs []netip.Addr
	at    time.Time
}

// New validates cfg and wires a Speaker; nothing runs until Run.
func New(cfg Config, deps Deps) (*Speaker, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("speaker: node name is required")
	}
	if deps.Client == nil || deps.Dynamic == nil || deps.Informers == nil || deps.StartMembership == nil ||
		deps.NewL2 == nil || deps.Interfaces == nil || deps.Registerer == nil || deps.Recorder == nil {
		return nil, errors.New("speaker: Client, Dynamic, Informers, StartMembership, NewL2, Interfaces, Recorder and Registerer are required")
	}
	if deps.Clock == nil {
		deps.Clock = clock.RealClock{}
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.ReleaseTimeout, DefaultReleaseTimeout}, {&cfg.DrainTimeout, DefaultDrainTimeout}, {&cfg.JoinInterval, DefaultJoinInterval}} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	s := &Speaker{cfg: cfg, deps: deps, clock: deps.Clock,
		fence:   election.NewFence(cfg.Fence),
		planner: election.NewPlanner(cfg.NodeName, cfg.ReleaseTimeout),
		trigger: make(chan struct{}, 1), notices: make(chan notice, 256), joining: make(chan struct{}, 1),
		announcedOn: map[netip.Addr][]string{},
	}
	m, err := newMetrics(deps.Registerer, func() float64 {
		if s.membership == nil {
			return 0
		}
		return float64(s.membership.HealthScore())
	})
	if err != nil {
		return nil, fmt.Errorf("speaker: %w", err)
	}
	s.metrics = m
	if s.cache, err = newCache(deps, s.requestSync); err != nil {
		return nil, fmt.Errorf("speaker: %w", err)
	}
	s.writer = newConditionWriter(deps.Client, s.cache.services)
	return s, nil
}

// requestSync asks for a sync; it never blocks.
func (s *Speaker) requestSync() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// gate is the fence as the responders see it.
func (s *Speaker) gate() bool {
	return s.fence.Open(s.clock.Now(), s.membership.LastHeard())
}

func (s *Speaker) onMessage(from string, payload []byte) {
	addrs, err := decodeTakeover(payload)
	if err != nil {
		return // from a newer agent speaking a format this one ignores
	}
	select {
	case s.notices <- notice{from: from, addrs: addrs, at: s.clock.Now()}:
	default:
		// Full only if the loop is stuck; the handover then ends by timeout.
	}
}

// HealthHandler serves /readyz (200 once the caches are synced and the
// node is in the membership) and /livez (200 while the process serves).
func (s *Speaker) HealthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" && !s.ready.Load() {
			http.Error(w, "not ready: waiting for caches or the membership", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
}
