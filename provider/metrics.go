package provider

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Service controllers' metrics, registered on the
// Registerer herald-ccm serves on /metrics (a fresh one in tests).
type metrics struct {
	// services counts the Services of a controller by the outcome of
	// their last sync: ready (it succeeded) or pending (it failed or was
	// deferred, e.g. waiting for an address).
	services *prometheus.GaugeVec
}

// Service states in herald_services.
const (
	stateReady   = "ready"
	statePending = "pending"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{services: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "herald_services",
		Help: "LoadBalancer Services by controller and by the outcome of their last sync: ready, or pending (failed or deferred, e.g. waiting for an address).",
	}, []string{"controller", "state"})}
	if err := reg.Register(m.services); err != nil {
		return nil, fmt.Errorf("registering metrics: %w", err)
	}
	return m, nil
}
