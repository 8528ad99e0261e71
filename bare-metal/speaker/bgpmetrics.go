package speaker

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldlb/herald/bare-metal/bgp"
)

// bgpMetrics are BGP's metrics. The per-session gauges are collected from
// the last snapshot of the sessions, so that a removed peer's series
// disappear with it instead of lingering at their last value.
type bgpMetrics struct {
	stateChanges *prometheus.CounterVec
	syncErrors   prometheus.Counter

	sessionUp, bfdUp, advertised *prometheus.Desc

	mu       sync.Mutex
	sessions []sessionSnapshot
}

// sessionSnapshot is one session as the metrics report it.
type sessionSnapshot struct {
	peer, address string
	established   bool
	bfd           bgp.BFDState
	advertised    int
}

func newBGPMetrics(reg prometheus.Registerer) (*bgpMetrics, error) {
	labels := []string{"peer", "address"}
	m := &bgpMetrics{
		stateChanges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_bgp_session_state_changes_total",
			Help: "BGP session state changes, by peer and the state entered."}, []string{"peer", "state"}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_bgp_sync_errors_total",
			Help: "BGP syncs that failed to apply some change (retried)."}),
		sessionUp: prometheus.NewDesc("herald_bgp_session_up",
			"1 when the BGP session with the peer is Established, else 0.", labels, nil),
		bfdUp: prometheus.NewDesc("herald_bgp_bfd_session_up",
			"1 when the BFD session with the peer is Up, else 0; only for peers with BFD.", labels, nil),
		advertised: prometheus.NewDesc("herald_bgp_prefixes_advertised",
			"Prefixes this node advertises to the peer.", labels, nil),
	}
	for _, c := range []prometheus.Collector{m.stateChanges, m.syncErrors, m} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *bgpMetrics) observe(sessions []sessionSnapshot) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sessions = sessions
}

// Describe implements prometheus.Collector.
func (m *bgpMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.sessionUp
	ch <- m.bfdUp
	ch <- m.advertised
}

// Collect implements prometheus.Collector.
func (m *bgpMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, s sessionSnapshot) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, s.peer, s.address)
	}
	for _, s := range m.sessions {
		gauge(m.sessionUp, boolValue(s.established), s)
		gauge(m.advertised, float64(s.advertised), s)
		if s.bfd != bgp.BFDNone {
			gauge(m.bfdUp, boolValue(s.bfd == bgp.BFDUp), s)
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
