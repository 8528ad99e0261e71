package speaker

import (
	"context"
	"net/netip"
	"slices"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/election"
)

// sync decides and applies what this node announces now, and returns when
// it must look again if nothing happens before (zero: only on events).
func (s *Speaker) sync(ctx context.Context) time.Time {
	logger := klog.FromContext(ctx)
	now := s.clock.Now()
	w, err := s.cache.world(s.cfg.NodeName, s.cfg.ClassOnly)
	if err != nil {
		logger.Error(err, "Reading the informer caches failed")
		s.metrics.syncErrors.Inc()
		return now.Add(time.Second)
	}
	w.members = s.membership.Members()
	out := decide(w)
	for _, name := range out.invalid {
		logger.Error(nil, "L2Advertisement has an invalid selector and is ignored", "l2advertisement", name)
	}
	open, reason, fenceNext := s.updateFence(logger, now, out.expected, w.members)
	plan := s.planner.Evaluate(now, out.owners, open)

	want := s.interfaces(ctx, w, out, plan.Announce)
	if err := s.l2.Set(ctx, want); err != nil {
		// Set applied what it could; the rest is retried on the next sync.
		logger.Error(err, "Announcing on some interfaces failed")
		s.metrics.syncErrors.Inc()
		fenceNext = earliest(fenceNext, now.Add(time.Second))
	}
	if len(plan.Gained) > 0 {
		s.announceGained(ctx, out, plan.Gained)
	}
	if len(plan.Stopped) > 0 || len(plan.Gained) > 0 {
		logger.V(2).Info("Announcements changed", "gained", plan.Gained, "stopped", plan.Stopped, "fenceOpen", open, "fenceReason", reason)
	}
	if open {
		s.reportConditions(w, out)
	}
	s.maybeJoin(ctx, w)
	s.metrics.observeMembers(w.members)
	return earliest(fenceNext, plan.Next)
}

// updateFence evaluates the fence with the quorum counted over expected.
func (s *Speaker) updateFence(logger klog.Logger, now time.Time, expected []string, members map[string]election.Member) (bool, election.Reason, time.Time) {
	h := s.membership.Health()
	h.Expected = len(expected)
	for _, n := range expected {
		if members[n].Alive() {
			h.Reachable++
		}
	}
	s.expected = expected
	open, reason, next := s.fence.Update(now, h)
	if open != s.fenceWasOpen {
		s.fenceWasOpen = open
		if open {
			s.metrics.fenceOpen.Set(1)
		} else {
			s.metrics.fenceOpen.Set(0)
			s.metrics.fenceClosed.WithLabelValues(string(reason)).Inc()
		}
		logger.Info("Fence changed", "open", open, "reason", reason, "reachable", h.Reachable, "expected", h.Expected)
	}
	return open, reason, next
}

// fenceChanged re-evaluates the fence between syncs and reports whether it
// opened or closed, which needs a sync.
func (s *Speaker) fenceChanged(ctx context.Context) bool {
	was := s.fenceWasOpen
	open, _, _ := s.updateFence(klog.FromContext(ctx), s.clock.Now(), s.expected, s.membership.Members())
	return open != was
}

// interfaces maps each address to announce to its interfaces: those named
// by the advertisements that select this node, plus the default one if
// any of them names none. An address being handed over keeps the
// interfaces it had.
func (s *Speaker) interfaces(ctx context.Context, w world, out outcome, announce []netip.Addr) map[string][]netip.Addr {
	self := s.selfNode(w)
	fresh := map[netip.Addr][]string{}
	for _, g := range out.groups {
		if !g.decision.Announce || self == nil {
			continue
		}
		for _, a := range g.addrs {
			fresh[a] = s.interfacesOf(ctx, g, self, a)
		}
	}
	want := map[string][]netip.Addr{}
	next := map[netip.Addr][]string{}
	for _, a := range announce {
		names, ok := fresh[a]
		if !ok {
			names = s.announcedOn[a]
		}
		next[a] = names
		for _, n := range names {
			want[n] = append(want[n], a)
		}
	}
	s.announcedOn = next
	return want
}

func (s *Speaker) interfacesOf(ctx context.Context, g *group, self *v1.Node, a netip.Addr) []string {
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
		name, err := s.deps.Interfaces.Default(a)
		if err != nil {
			klog.FromContext(ctx).Error(err, "No interface to announce on", "vip", a)
		} else {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

func (s *Speaker) selfNode(w world) *v1.Node {
	for _, n := range w.nodes {
		if n.Name == s.cfg.NodeName {
			return n
		}
	}
	return nil
}

// announceGained tells the other agents (repeatedly: UDP) and the users
// (events) about the addresses this node now announces. The Layer 2
// announcer sent gratuitous ARP/NA for new addresses in Set; addresses
// taken back during a handover were in its set already and get them here.
func (s *Speaker) announceGained(ctx context.Context, out outcome, gained []netip.Addr) {
	logger := klog.FromContext(ctx)
	s.l2.Gratuitous(gained...)
	payload, err := encodeTakeover(gained)
	if err == nil {
		for _, after := range noticeRepeats {
			s.clock.AfterFunc(after, func() {
				if err := s.membership.Broadcast(payload); err != nil {
					logger.V(2).Info("Sending a takeover notice failed", "err", err)
				}
			})
		}
	}
	for _, g := range out.groups {
		if !slices.ContainsFunc(g.addrs, func(a netip.Addr) bool { return slices.Contains(gained, a) }) {
			continue
		}
		s.metrics.ownerChanges.Inc()
		logger.Info("Announcing", "vip", g.addrs, "pool", g.pool, "interfaces", s.announcedOnAll(g.addrs))
		for _, svc := range g.services {
			s.deps.Recorder.Eventf(svc, v1.EventTypeNormal, ReasonAnnounced, "Announcing %s from node %s on %v with ARP/NDP",
				joinAddrs(g.addrs), s.cfg.NodeName, s.announcedOnAll(g.addrs))
		}
	}
}

func (s *Speaker) announcedOnAll(addrs []netip.Addr) []string {
	var names []string
	for _, a := range addrs {
		names = append(names, s.announcedOn[a]...)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// reportConditions writes the Announced condition where this node is the
// one to speak: the owner of a group, or its reporter when nobody may
// announce it; a Service no advertisement covers any more loses the
// condition, removed by the reporter of its key.
func (s *Speaker) reportConditions(w world, out outcome) {
	covered := map[*v1.Service]bool{}
	for _, g := range out.groups {
		cond, ok := desiredCondition(s.cfg.NodeName, g, s.announcedOn)
		for _, svc := range g.services {
			covered[svc] = true
			if ok {
				s.writer.set(svc, cond)
			}
		}
	}
	for _, svc := range w.services {
		if covered[svc] || meta.FindStatusCondition(svc.Status.Conditions, ConditionAnnounced) == nil {
			continue
		}
		if reporter(election.Key(ingressAddrs(svc)), w.members) == s.cfg.NodeName {
			s.writer.set(svc, nil)
		}
	}
}

// maybeJoin asks the agents of expected nodes that are not alive members
// to join, at most every JoinInterval and never two joins at once: a join
// waits for each unreachable node in turn.
func (s *Speaker) maybeJoin(ctx context.Context, w world) {
	now := s.clock.Now()
	if now.Sub(s.lastJoin) < s.cfg.JoinInterval {
		return
	}
	var addrs []netip.Addr
	for _, n := range w.nodes {
		if n.Name == s.cfg.NodeName || w.members[n.Name].Alive() || !slices.Contains(s.expected, n.Name) {
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
	case s.joining <- struct{}{}:
	default:
		return
	}
	s.lastJoin = now
	go func() {
		defer func() { <-s.joining }()
		if n, err := s.membership.Join(addrs); err != nil {
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

func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}
