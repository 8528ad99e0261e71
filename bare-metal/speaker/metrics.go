package speaker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldlb/herald/bare-metal/election"
)

type metrics struct {
	ownerChanges prometheus.Counter
	fenceOpen    prometheus.Gauge
	fenceClosed  *prometheus.CounterVec
	members      *prometheus.GaugeVec
	healthScore  prometheus.GaugeFunc
	syncErrors   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, score func() float64) (*metrics, error) {
	m := &metrics{
		ownerChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_l2_owner_changes_total",
			Help: "Times this node started announcing a Service's addresses with Layer 2 (counted by the new owner)."}),
		fenceOpen: prometheus.NewGauge(prometheus.GaugeOpts{Name: "herald_l2_fence_open",
			Help: "1 when this node may announce; 0 while it is fenced (cut off, no quorum, or settling)."}),
		fenceClosed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_l2_fence_closed_total",
			Help: "Times the fence closed, by reason."}, []string{"reason"}),
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "herald_memberlist_members",
			Help: "herald-agents this node knows of, by state (alive, suspect, dead, left)."}, []string{"state"}),
		healthScore: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "herald_memberlist_health_score",
			Help: "memberlist's awareness score: 0 when healthy, higher when this node's own probes fail."}, score),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_l2_sync_errors_total",
			Help: "Announcement syncs that failed (e.g. an interface could not be opened)."}),
	}
	for _, c := range []prometheus.Collector{m.ownerChanges, m.fenceOpen, m.fenceClosed, m.members, m.healthScore, m.syncErrors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

var stateNames = map[election.MemberState]string{
	election.MemberAlive: "alive", election.MemberSuspect: "suspect",
	election.MemberDead: "dead", election.MemberLeft: "left",
}

func (m *metrics) observeMembers(members map[string]election.Member) {
	counts := map[string]float64{"alive": 0, "suspect": 0, "dead": 0, "left": 0}
	for _, mem := range members {
		if name, ok := stateNames[mem.State]; ok {
			counts[name]++
		}
	}
	for state, n := range counts {
		m.members.WithLabelValues(state).Set(n)
	}
}
