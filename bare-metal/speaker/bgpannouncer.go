package speaker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/bgp"
	"github.com/heraldlb/herald/bare-metal/election"
)

// Condition and reasons BGP writes on Services, and the reasons of its
// events.
const (
	// ConditionBGPAdvertised reports on a Service which nodes advertise
	// its addresses over BGP, to which peers, or why none does.
	ConditionBGPAdvertised = "herald.dev/BGPAdvertised"
	ReasonBGP              = "BGP"
	// Events on BGPPeers.
	ReasonSessionEstablished = "SessionEstablished"
	ReasonSessionDown        = "SessionDown"
	// reasonInvalid is the Warning event on a BGPPeer or BGPAdvertisement
	// that herald-agent cannot use.
	reasonInvalid = "Invalid"
)

const (
	// statusCheckInterval is how often session states are compared with
	// the last report between events: BFD has no event of its own.
	statusCheckInterval = time.Second
	// objectReporters is how many agents may write a BGP object's Valid
	// condition: the first by rendezvous rank at once, the next ones after
	// reporterStagger each if it is still not written (their agents may be
	// down), so an invalid object is reported once, not by every node.
	objectReporters = 3
	reporterStagger = time.Second
	retryInterval   = time.Second
	closeTimeout    = 2 * time.Second
)

// bgpAnnouncer advertises with BGP: every eligible node, every address.
type bgpAnnouncer struct {
	s          *Speaker
	router     bgp.Router
	reconciler *bgp.Reconciler
	secrets    *secretCache
	services   *conditionWriter
	statuses   *statusApplier
	metrics    *bgpMetrics
	events     chan bgp.PeerEvent

	// entries are the status entries this node last reported, by peer.
	entries     map[string]nodeEntry
	lastCheck   time.Time
	lastSummary string
	draining    bool
	withdrawnAt time.Time
}

func newBGPAnnouncer(s *Speaker) (*bgpAnnouncer, error) {
	m, err := newBGPMetrics(s.deps.Registerer)
	if err != nil {
		return nil, err
	}
	return &bgpAnnouncer{s: s, metrics: m, events: make(chan bgp.PeerEvent, 256), entries: map[string]nodeEntry{},
		secrets:  newSecretCache(s.deps.Dynamic, s.cfg.SecretNamespace, s.cfg.SecretRefresh, s.clock, s.requestSync),
		services: newConditionWriter(s.deps.Dynamic, s.cache.services, ConditionBGPAdvertised, FieldManagerBGP),
		statuses: newStatusApplier(s.deps.Dynamic),
	}, nil
}

func (b *bgpAnnouncer) start(ctx context.Context) error {
	router, err := b.s.deps.NewBGP(b.onEvent)
	if err != nil {
		return fmt.Errorf("BGP speaker: %w", err)
	}
	b.router, b.reconciler = router, bgp.NewReconciler(router)
	go b.secrets.run(ctx)
	go b.services.run(ctx)
	go b.statuses.run(ctx)
	klog.FromContext(ctx).Info("BGP announcing", "convergeWait", b.s.cfg.ConvergeWait)
	return nil
}

// onEvent runs on GoBGP's goroutine: it must not block.
func (b *bgpAnnouncer) onEvent(ev bgp.PeerEvent) {
	select {
	case b.events <- ev:
	default: // the next status check reports the state anyway
	}
	b.s.requestSync()
}

func (b *bgpAnnouncer) poll(context.Context) bool {
	now := b.s.clock.Now()
	if len(b.events) > 0 {
		return true
	}
	if now.Sub(b.lastCheck) < statusCheckInterval || b.router == nil {
		return false
	}
	b.lastCheck = now
	var parts []string
	for _, p := range b.router.Peers() {
		parts = append(parts, fmt.Sprintf("%s=%s/%s", p.Name, p.State, p.BFD))
	}
	slices.Sort(parts)
	summary := strings.Join(parts, ",")
	changed := summary != b.lastSummary
	b.lastSummary = summary
	return changed
}

func (b *bgpAnnouncer) sync(ctx context.Context, w world) time.Time {
	logger := klog.FromContext(ctx)
	now := b.s.clock.Now()
	b.recordEvents(ctx, w)
	if b.draining {
		return b.syncDrain(ctx, now)
	}
	var names []string
	for _, p := range w.bgpPeers {
		if name, _, ok := bgp.PasswordRef(p.Spec); ok {
			names = append(names, name)
		}
	}
	b.secrets.ensure(ctx, names)
	out := decideBGP(w, bgpInput{password: b.secrets.password, host: b.s.deps.Host})
	var next time.Time
	if err := b.reconciler.Reconcile(ctx, out.peers, out.desired); err != nil {
		logger.Error(err, "Applying BGP sessions and routes failed; retrying")
		b.metrics.syncErrors.Inc()
		next = now.Add(retryInterval)
	}
	b.reportSessions(w, out, now)
	b.reportServices(w, out)
	b.reportObjects(w, out)
	return next
}

func (b *bgpAnnouncer) syncDrain(ctx context.Context, now time.Time) time.Time {
	if b.withdrawnAt.IsZero() {
		if err := b.reconciler.WithdrawAll(ctx); err != nil {
			klog.FromContext(ctx).Error(err, "Withdrawing the BGP routes failed; retrying")
			return now.Add(pollInterval)
		}
		b.withdrawnAt = now
		klog.FromContext(ctx).Info("Withdrew every BGP route; waiting for the routers to move the traffic",
			"wait", b.s.cfg.ConvergeWait)
	}
	return b.withdrawnAt.Add(b.s.cfg.ConvergeWait)
}

func (b *bgpAnnouncer) startDrain(context.Context) { b.draining = true }

func (b *bgpAnnouncer) drained() bool {
	return b.draining && !b.withdrawnAt.IsZero() && !b.s.clock.Now().Before(b.withdrawnAt.Add(b.s.cfg.ConvergeWait))
}

// close ends the sessions (Cease) and says so in this node's status
// entries, written directly: the status writer stops with the drain.
func (b *bgpAnnouncer) close(ctx context.Context) {
	logger := klog.FromContext(ctx)
	ctx, cancel := context.WithTimeout(ctx, closeTimeout)
	defer cancel()
	if err := b.router.Close(ctx); err != nil {
		logger.Error(err, "Closing the BGP sessions")
	}
	for name := range b.entries {
		e := nodeEntry{SessionState: v1alpha1.SessionIdle, LastTransitionTime: metav1.NewTime(b.s.clock.Now()),
			Message: "herald-agent stopped on this node"}
		key := statusKey{resource: bgpPeerResource, kind: "BGPPeer", name: name, manager: nodeFieldManager(b.s.cfg.NodeName)}
		if err := b.statuses.apply(ctx, key, statusPatch{status: map[string]any{"nodes": []any{e.status(b.s.cfg.NodeName)}}}); err != nil {
			logger.V(2).Info("Reporting the closed session failed", "peer", name, "err", err)
		}
	}
}

// recordEvents turns session state changes into events on the BGPPeer and
// counts them.
func (b *bgpAnnouncer) recordEvents(ctx context.Context, w world) {
	for {
		var ev bgp.PeerEvent
		select {
		case ev = <-b.events:
		default:
			return
		}
		b.metrics.stateChanges.WithLabelValues(ev.Name, string(ev.To)).Inc()
		klog.FromContext(ctx).Info("BGP session changed", "peer", ev.Name, "address", ev.Address, "from", ev.From, "to", ev.To, "reason", ev.Reason)
		ref := objectRef(w, ev.Name)
		switch {
		case ref == nil:
		case ev.To == bgp.StateEstablished:
			b.s.deps.Recorder.Eventf(ref, v1.EventTypeNormal, ReasonSessionEstablished, "Node %s: session with %s established",
				b.s.cfg.NodeName, ev.Address)
		case ev.From == bgp.StateEstablished:
			b.s.deps.Recorder.Eventf(ref, v1.EventTypeWarning, ReasonSessionDown, "Node %s: session with %s down (%s): %s",
				b.s.cfg.NodeName, ev.Address, ev.To, orUnknown(ev.Reason))
		}
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "reason unknown"
	}
	return s
}

// objectRef refers to a BGPPeer for an event. herald's types are not in
// client-go's scheme, so the reference is built by hand.
func objectRef(w world, peer string) *v1.ObjectReference {
	for _, p := range w.bgpPeers {
		if p.Name == peer {
			return &v1.ObjectReference{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "BGPPeer", Name: p.Name, UID: p.UID}
		}
	}
	return nil
}

// reportSessions writes this node's status entry on each BGPPeer that
// selects it (and removes it from those that no longer do) and updates the
// session metrics.
func (b *bgpAnnouncer) reportSessions(w world, out bgpOutcome, now time.Time) {
	states := map[string]bgp.PeerStatus{}
	for _, st := range b.router.Peers() {
		states[st.Name] = st
	}
	want := map[string]nodeEntry{}
	var snaps []sessionSnapshot
	for _, p := range out.peers {
		st := states[p.Name]
		e := nodeEntry{SessionState: string(st.State), BFDState: string(st.BFD), AdvertisedPrefixes: int32(b.reconciler.Advertised(p.Name))} //nolint:gosec // bounded by the Services
		if e.SessionState == "" {
			e.SessionState = v1alpha1.SessionIdle
		}
		if st.State != bgp.StateEstablished {
			e.Message = st.LastError
		}
		if msg, ok := out.notConfigured[p.Name]; ok {
			e.Message = msg
		}
		want[p.Name] = e
		snaps = append(snaps, sessionSnapshot{peer: p.Name, address: p.Address.String(), established: st.State == bgp.StateEstablished,
			bfd: st.BFD, advertised: b.reconciler.Advertised(p.Name)})
	}
	for name, msg := range out.notConfigured {
		if _, ok := want[name]; !ok {
			want[name] = nodeEntry{SessionState: v1alpha1.SessionNotConfigured, Message: msg}
		}
	}
	b.metrics.observe(snaps)
	for name, e := range want {
		old, had := b.entries[name]
		e.LastTransitionTime = old.LastTransitionTime
		if !had || old.SessionState != e.SessionState {
			e.LastTransitionTime = metav1.NewTime(now)
		}
		b.entries[name] = e
		b.setEntry(name, &e)
	}
	for name := range b.entries {
		if _, ok := want[name]; !ok {
			delete(b.entries, name)
			b.setEntry(name, nil)
		}
	}
}

// setEntry asks for this node's entry on peer (nil: none).
func (b *bgpAnnouncer) setEntry(peer string, e *nodeEntry) {
	node := b.s.cfg.NodeName
	nodes := []any{}
	if e != nil {
		nodes = append(nodes, e.status(node))
	}
	key := statusKey{resource: bgpPeerResource, kind: "BGPPeer", name: peer, manager: nodeFieldManager(node)}
	b.statuses.set(key, statusPatch{status: map[string]any{"nodes": nodes}, upToDate: func() bool {
		obj := b.s.cache.bgpPeer(peer)
		if obj == nil {
			return e == nil
		}
		for _, s := range obj.Status.Nodes {
			if s.Node == node {
				return e != nil && e.sameAs(s)
			}
		}
		return e == nil
	}}, 0)
}

// reportServices writes the BGPAdvertised condition of the Services this
// node reports for, and removes it from Services BGP no longer covers.
func (b *bgpAnnouncer) reportServices(w world, out bgpOutcome) {
	covered := map[*v1.Service]bool{}
	for _, s := range out.services {
		covered[s.svc] = true
		if s.reporter == b.s.cfg.NodeName {
			b.services.set(s.svc, bgpCondition(s))
		}
	}
	for _, svc := range w.services {
		if covered[svc] || meta.FindStatusCondition(svc.Status.Conditions, ConditionBGPAdvertised) == nil {
			continue
		}
		if bgpReporter(election.Key(ingressAddrs(svc)), nil, w.nodes) == b.s.cfg.NodeName {
			b.services.set(svc, nil)
		}
	}
}

// reportObjects writes the Valid condition of the BGPPeers and
// BGPAdvertisements, if this node is among their reporters.
func (b *bgpAnnouncer) reportObjects(w world, out bgpOutcome) {
	for _, p := range w.bgpPeers {
		b.reportObject(w, bgpPeerResource, "BGPPeer", &p.ObjectMeta, p.Status.Conditions, out.peerValid[p.Name])
	}
	for _, a := range w.bgpAds {
		b.reportObject(w, bgpAdResource, "BGPAdvertisement", &a.ObjectMeta, a.Status.Conditions, out.adValid[a.Name])
	}
}

func (b *bgpAnnouncer) reportObject(w world, resource schema.GroupVersionResource, kind string, obj *metav1.ObjectMeta,
	current []metav1.Condition, c objectCondition) {
	if c.reason == "" {
		return
	}
	rank := reporterRank(b.s.cfg.NodeName, kind+"/"+obj.Name, w.nodes)
	if rank < 0 || rank >= objectReporters {
		return
	}
	cond := metav1.Condition{Type: v1alpha1.ConditionValid, Status: metav1.ConditionTrue, Reason: c.reason, Message: c.message,
		ObservedGeneration: obj.Generation, LastTransitionTime: metav1.NewTime(b.s.clock.Now())}
	if !c.valid {
		cond.Status = metav1.ConditionFalse
	}
	if old := meta.FindStatusCondition(current, v1alpha1.ConditionValid); old != nil && old.Status == cond.Status {
		cond.LastTransitionTime = old.LastTransitionTime
	}
	name, uid := obj.Name, obj.UID
	getter := func() []metav1.Condition { return current }
	switch kind {
	case "BGPPeer":
		getter = func() []metav1.Condition { return conditionsOf(b.s.cache.bgpPeer(name)) }
	case "BGPAdvertisement":
		getter = func() []metav1.Condition { return adConditionsOf(b.s.cache.bgpAd(name)) }
	}
	key := statusKey{resource: resource, kind: kind, name: name, manager: FieldManagerBGP}
	b.statuses.set(key, statusPatch{
		status: conditionStatus(cond),
		upToDate: func() bool {
			old := meta.FindStatusCondition(getter(), v1alpha1.ConditionValid)
			return old != nil && sameCondition(*old, cond, cond.ObservedGeneration)
		},
		onWritten: func() {
			if !c.valid {
				ref := &v1.ObjectReference{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: kind, Name: name, UID: uid}
				b.s.deps.Recorder.Eventf(ref, v1.EventTypeWarning, reasonInvalid, "%s: %s", c.reason, c.message)
			}
		},
	}, time.Duration(rank)*reporterStagger)
}

func conditionsOf(p *v1alpha1.BGPPeer) []metav1.Condition {
	if p == nil {
		return nil
	}
	return p.Status.Conditions
}

func adConditionsOf(a *v1alpha1.BGPAdvertisement) []metav1.Condition {
	if a == nil {
		return nil
	}
	return a.Status.Conditions
}

// reporterRank is self's place among the fit nodes in the rendezvous order
// for key (0 first), or -1 if self is not fit or beyond objectReporters.
func reporterRank(self, key string, nodes []*v1.Node) int {
	var cands []election.Candidate
	for _, n := range nodes {
		cands = append(cands, election.Candidate{Node: n.Name, Ineligible: election.NodeIneligible(n)})
	}
	for rank := range objectReporters {
		d := election.Decide("", key, cands)
		switch d.Owner {
		case "":
			return -1
		case self:
			return rank
		}
		for i := range cands {
			if cands[i].Node == d.Owner {
				cands[i].Ineligible = election.ReasonNotOwner
			}
		}
	}
	return -1
}
