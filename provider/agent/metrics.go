package agent

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"

	"github.com/heraldlb/herald/provider/dataplane"
)

// metrics are the agent's Prometheus metrics. They are registered on a
// Registerer the caller owns, never on a global one, so that each agent (and
// each test) has its own.
type metrics struct {
	syncDuration *prometheus.HistogramVec
	syncErrors   prometheus.Counter
	operations   prometheus.Gauge
	chains       prometheus.Gauge
	rules        prometheus.Gauge
	elements     prometheus.Gauge
	lastSuccess  prometheus.Gauge
	hcServers    prometheus.Gauge
	hcErrors     prometheus.Counter
	programming  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		syncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "herald_dataplane_sync_duration_seconds",
			Help: "Time to build and apply the nftables ruleset, by mode (full, reload, rewrite or partial).",
			// 1 ms to about 65 s: a partial sync of a few elements up to a
			// full sync of tens of thousands of Services.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 17),
		}, []string{"mode"}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dataplane_sync_errors_total",
			Help: "Syncs whose nftables transaction failed; the next sync is full.",
		}),
		operations: gauge("herald_dataplane_sync_operations", "nftables operations in the last successful sync."),
		chains:     gauge("herald_dataplane_chains", "Chains in the herald table after the last successful sync."),
		rules:      gauge("herald_dataplane_rules", "Rules in the herald table after the last successful sync."),
		elements:   gauge("herald_dataplane_elements", "Set and map elements in the herald table after the last successful sync."),
		lastSuccess: gauge("herald_dataplane_last_sync_success_timestamp_seconds",
			"Unix time of the last successful sync."),
		hcServers: gauge("herald_healthcheck_servers", "healthCheckNodePort servers open on this node."),
		hcErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_healthcheck_listen_errors_total",
			Help: "Failures to open a healthCheckNodePort listener; retried at the next sync.",
		}),
		// kube-proxy's network_programming_duration_seconds, the SLI of the
		// Kubernetes scalability tests, with buckets down to a millisecond:
		// herald's partial syncs take a few.
		programming: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "herald_network_programming_duration_seconds",
			Help: "From an EndpointSlice change (its " + v1.EndpointsLastChangeTriggerTime +
				" annotation) to the rules being in the kernel, by IP family of the slice.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 19), // 1 ms to ~4.4 min
		}, []string{"ip_family"}),
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.syncDuration, m.syncErrors, m.operations, m.chains,
		m.rules, m.elements, m.lastSuccess, m.hcServers, m.hcErrors, m.programming} {
		errs = append(errs, reg.Register(c))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return m, nil
}

func gauge(name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
}

// syncMode labels a sync: "full" through nft, "reload" (a full sync that
// rewrote only elements, over netlink), "rewrite" (a full sync that wrote
// the whole table over netlink) or "partial".
func syncMode(res dataplane.SyncResult) string {
	switch {
	case res.Reloaded:
		return "reload"
	case res.Rewritten:
		return "rewrite"
	case res.Full:
		return "full"
	}
	return "partial"
}

// synced records a successful sync of r.
func (m *metrics) synced(r *dataplane.Ruleset, res dataplane.SyncResult, now time.Time) {
	rules, elements := 0, 0
	for _, c := range r.Chains {
		rules += len(c.Rules)
	}
	for _, els := range r.Elements {
		elements += len(els)
	}
	m.operations.Set(float64(res.Operations))
	m.chains.Set(float64(len(r.Chains)))
	m.rules.Set(float64(rules))
	m.elements.Set(float64(elements))
	m.lastSuccess.Set(float64(now.UnixNano()) / 1e9)
}

// programmed records, after a successful sync, how long ago the EndpointSlice
// changes it programmed were made.
func (m *metrics) programmed(triggers []trigger, now time.Time) {
	for _, t := range triggers {
		m.programming.WithLabelValues(t.family).Observe(max(0, now.Sub(t.at).Seconds()))
	}
}
