package baremetal

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldlb/herald/bare-metal/ipam"
)

// metrics are the backend's Prometheus metrics, registered on a Registerer
// the caller owns (herald-ccm's /metrics registry; a fresh one in tests),
// never on a global one. Totals saturate at 2^64-1 for huge IPv6 pools; as
// float64 gauges that is still "more than you will use".
type metrics struct {
	total      *prometheus.GaugeVec
	inUse      *prometheus.GaugeVec
	outside    *prometheus.GaugeVec
	claimsLost prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		total: gaugeVec("herald_pool_addresses_total", "Addresses in an address pool, by IP family.", "pool", "family"),
		inUse: gaugeVec("herald_pool_addresses_in_use", "Addresses of an address pool assigned to Services or claimed "+
			"by another herald-ccm instance (a shared address counts once), by IP family.", "pool", "family"),
		outside: gaugeVec("herald_addresses_outside_pools", "Addresses Services keep that no address pool holds any more "+
			"(their pool was deleted or shrunk), by IP family.", "family"),
		claimsLost: prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_address_claims_lost_total",
			Help: "Addresses this herald-ccm picked but another instance had claimed first; each was reserved and another allocated."}),
	}
	for _, c := range []prometheus.Collector{m.total, m.inUse, m.outside, m.claimsLost} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	return m, nil
}

func gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
}

// publish sets the gauges to usage and outside. Reset drops pools that no
// longer exist instead of freezing their last value.
func (m *metrics) publish(usage []ipam.PoolUsage, outside map[ipam.Family]uint64) {
	for _, f := range []ipam.Family{ipam.IPv4, ipam.IPv6} {
		m.outside.WithLabelValues(string(f)).Set(float64(outside[f]))
	}
	m.total.Reset()
	m.inUse.Reset()
	for _, u := range usage {
		for _, f := range u.Families {
			m.total.WithLabelValues(u.Name, string(f.Family)).Set(float64(f.Total))
			m.inUse.WithLabelValues(u.Name, string(f.Family)).Set(float64(f.InUse))
		}
	}
}
