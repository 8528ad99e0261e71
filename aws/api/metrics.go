package api

import (
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

// AWS API metrics, served on herald-ccm's /metrics.
var (
	callsTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "herald", Subsystem: "aws_api", Name: "calls_total",
		Help:           "AWS API calls by API family, operation and outcome (success or the AWS error code), retries included.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"family", "operation", "outcome"})
	throttledTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "herald", Subsystem: "aws_api", Name: "throttled_total",
		Help:           "AWS API attempts throttled by AWS, by API family.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"family"})
	budgetQPS = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace: "herald", Subsystem: "aws_api", Name: "budget_qps",
		Help:           "Current request rate the shared budget of an API family allows.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"family"})
)

func init() {
	legacyregistry.MustRegister(callsTotal, throttledTotal, budgetQPS)
}
