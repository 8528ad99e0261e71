package aws

import (
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

var gcOrphans = metrics.NewGauge(&metrics.GaugeOpts{
	Namespace: "herald", Subsystem: "aws", Name: "orphaned_load_balancers",
	Help:           "Load balancer stacks herald owns whose Service is gone, as of the last garbage collection.",
	StabilityLevel: metrics.ALPHA,
})

func init() { legacyregistry.MustRegister(gcOrphans) }
