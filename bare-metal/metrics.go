package baremetal

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/heraldlb/herald/bare-metal/ipam"
)

// Pool metrics, served on herald-ccm's /metrics with the controller
// manager's own. Totals saturate at 2^64-1 for huge IPv6 pools; as float64
// gauges that is still "more than you will use".
var (
	poolAddressesTotal = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "herald", Subsystem: "pool", Name: "addresses_total",
		Help:           "Addresses in an address pool, by IP family.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"pool", "family"})
	poolAddressesInUse = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "herald", Subsystem: "pool", Name: "addresses_in_use",
		Help:           "Addresses of an address pool assigned to Services (a shared address counts once), by IP family.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"pool", "family"})
	registerMetrics sync.Once
)

// updateMetrics publishes the allocator's usage and returns it.
func (b *Backend) updateMetrics() []ipam.PoolUsage {
	registerMetrics.Do(func() {
		legacyregistry.MustRegister(poolAddressesTotal, poolAddressesInUse)
	})
	usage := b.alloc.Usage()
	// Reset drops pools that no longer exist instead of freezing their last value.
	poolAddressesTotal.Reset()
	poolAddressesInUse.Reset()
	for _, u := range usage {
		for _, f := range u.Families {
			poolAddressesTotal.WithLabelValues(u.Name, string(f.Family)).Set(float64(f.Total))
			poolAddressesInUse.WithLabelValues(u.Name, string(f.Family)).Set(float64(f.InUse))
		}
	}
	return usage
}
