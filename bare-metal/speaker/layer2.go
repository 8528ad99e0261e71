package speaker

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/election"
)

// layer2 announces with ARP and NDP: one node per Service, elected by every
// agent alike over the membership, fenced when cut off, handed over make
// before break.
type layer2 struct {
	s       *Speaker
	fence   *election.Fence
	planner *election.Planner
	metrics *metrics
	writer  *conditionWriter

	membership Membership
	responder  Announcer
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
	draining     bool
}

type notice struct {
	from  string
	addrs []netip.Addr
	at    time.Time
}

func newLayer2(s *Speaker) (*layer2, error) {
	l := &layer2{s: s,
		fence:       election.NewFence(s.cfg.Fence),
		planner:     election.NewPlanner(s.cfg.NodeName, s.cfg.ReleaseTimeout),
		notices:     make(chan notice, 256),
		joining:     make(chan struct{}, 1),
		announcedOn: map[netip.Addr][]string{},
		writer:      newConditionWriter(s.deps.Dynamic, s.cache.services, ConditionAnnounced, FieldManager),
	}
	m, err := newMetrics(s.deps.Registerer, func() float64 {
		if l.membership == nil {
			return 0
		}
		return float64(l.membership.HealthScore())
	})
	if err != nil {
		return nil, err
	}
	l.metrics = m
	return l, nil
}

func (l *layer2) start(ctx context.Context) error {
	var err error
	if l.membership, err = l.s.deps.StartMembership(l.s.requestSync, l.onMessage); err != nil {
		return fmt.Errorf("membership: %w", err)
	}
	if l.responder, err = l.s.deps.NewL2(l.gate); err != nil {
		_ = l.membership.Leave(time.Second)
		return fmt.Errorf("layer 2 responders: %w", err)
	}
	go l.writer.run(ctx)
	klog.FromContext(ctx).Info("Layer 2 announcing", "fenceSilenceTimeout", l.s.cfg.Fence.SilenceTimeout, "settle", l.s.cfg.Fence.Settle)
	return nil
}

// gate is the fence as the responders see it.
func (l *layer2) gate() bool {
	return l.fence.Open(l.s.clock.Now(), l.membership.LastHeard())
}

func (l *layer2) onMessage(from string, payload []byte) {
	addrs, err := decodeTakeover(payload)
	if err != nil {
		return // from a newer agent speaking a format this one ignores
	}
	select {
	case l.notices <- notice{from: from, addrs: addrs, at: l.s.clock.Now()}:
		l.s.requestSync()
	default:
		// Full only if the loop is stuck; the handover then ends by timeout.
	}
}

// poll reports whether a notice waits or the fence opened or closed.
func (l *layer2) poll(ctx context.Context) bool {
	return len(l.notices) > 0 || l.fenceChanged(ctx)
}

// takeNotices hands the takeover notices received since the last sync to
// the planner.
func (l *layer2) takeNotices() {
	for {
		select {
		case n := <-l.notices:
			for _, a := range n.addrs {
				l.planner.TookOver(a, n.from, n.at)
			}
		default:
			return
		}
	}
}

// sync decides and applies what this node announces now, and returns when
// it must look again if nothing happens before (zero: only on events).
func (l *layer2) sync(ctx context.Context, w world) time.Time {
	logger := klog.FromContext(ctx)
	now := l.s.clock.Now()
	l.takeNotices()
	w.members = l.membership.Members()
	out := decide(w)
	for _, name := range out.invalid {
		logger.Error(nil, "L2Advertisement has an invalid selector and is ignored", "l2advertisement", name)
	}
	open, reason, fenceNext := l.updateFence(logger, now, out.expected, w.members)
	plan := l.planner.Evaluate(now, out.owners, open)

	want := l.interfaces(ctx, w, out, plan.Announce)
	if err := l.responder.Set(ctx, want); err != nil {
		// Set applied what it could; the rest is retried on the next sync.
		logger.Error(err, "Announcing on some interfaces failed")
		l.metrics.syncErrors.Inc()
		fenceNext = earliest(fenceNext, now.Add(time.Second))
	}
	if len(plan.Gained) > 0 {
		l.announceGained(ctx, out, plan.Gained)
	}
	if len(plan.Stopped) > 0 || len(plan.Gained) > 0 {
		logger.V(2).Info("Announcements changed", "gained", plan.Gained, "stopped", plan.Stopped, "fenceOpen", open, "fenceReason", reason)
	}
	if open {
		l.reportConditions(w, out)
	}
	l.maybeJoin(ctx, w)
	l.metrics.observeMembers(w.members)
	return earliest(fenceNext, plan.Next)
}

// startDrain tells the other agents this one is draining: they elect new
// owners, each new owner announces and sends its takeover notice, and this
// node stops answering each address as its notice arrives.
func (l *layer2) startDrain(ctx context.Context) {
	l.draining = true
	if err := l.membership.SetDraining(true, time.Second); err != nil {
		klog.FromContext(ctx).Error(err, "Announcing the drain failed; addresses move when this agent leaves")
	}
}

func (l *layer2) drained() bool { return l.draining && !l.planner.Holds() }

// close stops answering and leaves the membership.
func (l *layer2) close(ctx context.Context) {
	logger := klog.FromContext(ctx)
	if err := l.responder.Close(); err != nil {
		logger.Error(err, "Closing the Layer 2 responders")
	}
	if err := l.membership.Leave(time.Second); err != nil {
		logger.Error(err, "Leaving the membership")
	}
}

// updateFence evaluates the fence with the quorum counted over expected.
func (l *layer2) updateFence(logger klog.Logger, now time.Time, expected []string, members map[string]election.Member) (bool, election.Reason, time.Time) {
	h := l.membership.Health()
	h.Expected = len(expected)
	for _, n := range expected {
		if members[n].Alive() {
			h.Reachable++
		}
	}
	l.expected = expected
	open, reason, next := l.fence.Update(now, h)
	if open != l.fenceWasOpen {
		l.fenceWasOpen = open
		if open {
			l.metrics.fenceOpen.Set(1)
		} else {
			l.metrics.fenceOpen.Set(0)
			l.metrics.fenceClosed.WithLabelValues(string(reason)).Inc()
		}
		logger.Info("Fence changed", "open", open, "reason", reason, "reachable", h.Reachable, "expected", h.Expected)
	}
	return open, reason, next
}

// fenceChanged re-evaluates the fence between syncs and reports whether it
// opened or closed, which needs a sync.
func (l *layer2) fenceChanged(ctx context.Context) bool {
	was := l.fenceWasOpen
	open, _, _ := l.updateFence(klog.FromContext(ctx), l.s.clock.Now(), l.expected, l.membership.Members())
	return open != was
}

// interfaces maps each address to announce to its interfaces: those named
// by the advertisements that select this node, plus the default one if
// any of them names none. An address being handed over keeps the
// interfaces it had.
func (l *layer2) interfaces(ctx context.Context, w world, out outcome, announce []netip.Addr) map[string][]netip.Addr {
	self := selfNode(w)
	fresh := map[netip.Addr][]string{}
	for _, g := range out.groups {
		if !g.decision.Announce || self == nil {
			continue
		}
		for _, a := range g.addrs {
			fresh[a] = l.interfacesOf(ctx, g, self, a)
		}
	}
	want := map[string][]netip.Addr{}
	next := map[netip.Addr][]string{}
	for _, a := range announce {
		names, ok := fresh[a]
		if !ok {
			names = l.announcedOn[a]
		}
		next[a] = names
		for _, n := range names {
			want[n] = append(want[n], a)
		}
	}
	l.announcedOn = next
	return want
}

func (l *layer2) interfacesOf(ctx context.Context, g *group, self *v1.Node, a netip.Addr) []string {
	var names []string
	useDefault := false
	for _, ad := range g.ads {
		if !selectsNode([]compiledAd{ad}, self) {
			continue
		}
		if len(ad.obj.Spec.Interfaces) == 0 {
			useDefault = true
		}
		names = append(names, ad.obj.Spec.Interfaces...)
	}
	if useDefault {
		name, err := l.s.deps.Interfaces.Default(a)
		if err != nil {
			klog.FromContext(ctx).Error(err, "No interface to announce on", "vip", a)
		} else {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

func selfNode(w world) *v1.Node {
	for _, n := range w.nodes {
		if n.Name == w.self {
			return n
		}
	}
	return nil
}

// announceGained tells the other agents (repeatedly: UDP) and the users
// (events) about the addresses this node now announces. The Layer 2
// announcer sent gratuitous ARP/NA for new addresses in Set; addresses
// taken back during a handover were in its set already and get them here.
func (l *layer2) announceGained(ctx context.Context, out outcome, gained []netip.Addr) {
	logger := klog.FromContext(ctx)
	l.responder.Gratuitous(gained...)
	payload, err := encodeTakeover(gained)
	if err == nil {
		for _, after := range noticeRepeats {
			l.s.clock.AfterFunc(after, func() {
				if err := l.membership.Broadcast(payload); err != nil {
					logger.V(2).Info("Sending a takeover notice failed", "err", err)
				}
			})
		}
	}
	for _, g := range out.groups {
		if !slices.ContainsFunc(g.addrs, func(a netip.Addr) bool { return slices.Contains(gained, a) }) {
			continue
		}
		l.metrics.ownerChanges.Inc()
		logger.Info("Announcing", "vip", g.addrs, "pool", g.pool, "interfaces", l.announcedOnAll(g.addrs))
		for _, svc := range g.services {
			l.s.deps.Recorder.Eventf(svc, v1.EventTypeNormal, ReasonAnnounced, "Announcing %s from node %s on %v with ARP/NDP",
				joinAddrs(g.addrs), l.s.cfg.NodeName, l.announcedOnAll(g.addrs))
		}
	}
}

func (l *layer2) announcedOnAll(addrs []netip.Addr) []string {
	var names []string
	for _, a := range addrs {
		names = append(names, l.announcedOn[a]...)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// reportConditions writes the Announced condition where this node is the
// one to speak: the owner of a group, or its reporter when nobody may
// announce it; a Service no advertisement covers any more loses the
// condition, removed by the reporter of its key.
func (l *layer2) reportConditions(w world, out outcome) {
	covered := map[*v1.Service]bool{}
	for _, g := range out.groups {
		cond, ok := desiredCondition(l.s.cfg.NodeName, g, l.announcedOn)
		for _, svc := range g.services {
			covered[svc] = true
			if ok {
				l.writer.set(svc, cond)
			}
		}
	}
	for _, svc := range w.services {
		if covered[svc] || meta.FindStatusCondition(svc.Status.Conditions, ConditionAnnounced) == nil {
			continue
		}
		if reporter(election.Key(ingressAddrs(svc)), w.members) == l.s.cfg.NodeName {
			l.writer.set(svc, nil)
		}
	}
}

// maybeJoin asks the agents of expected nodes that are not alive members
// to join, at most every JoinInterval and never two joins at once: a join
// waits for each unreachable node in turn.
func (l *layer2) maybeJoin(ctx context.Context, w world) {
	now := l.s.clock.Now()
	if now.Sub(l.lastJoin) < l.s.cfg.JoinInterval {
		return
	}
	var addrs []netip.Addr
	for _, n := range w.nodes {
		if n.Name == l.s.cfg.NodeName || w.members[n.Name].Alive() || !slices.Contains(l.expected, n.Name) {
			continue
		}
		if a, ok := NodeAddress(n); ok {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return
	}
	select {
	case l.joining <- struct{}{}:
	default:
		return
	}
	l.lastJoin = now
	go func() {
		defer func() { <-l.joining }()
		if n, err := l.membership.Join(addrs); err != nil {
			klog.FromContext(ctx).V(2).Info("Joining agents failed", "tried", addrs, "joined", n, "err", err)
		}
	}()
}

// NodeAddress is the address the node's agent listens on: its first
// InternalIP.
func NodeAddress(n *v1.Node) (netip.Addr, bool) {
	for _, a := range n.Status.Addresses {
		if a.Type == v1.NodeInternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				return ip, true
			}
		}
	}
	return netip.Addr{}, false
}
