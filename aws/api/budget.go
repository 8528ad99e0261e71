package api

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/time/rate"
)

// Rate is a steady request rate and the burst allowed above it.
type Rate struct {
	QPS   float64 `json:"qps"`
	Burst int     `json:"burst"`
}

// Budget is the token bucket one API family (ELBv2, EC2) shares across
// every Service and every call, retries included: AWS throttles per account
// and region, so per-Service limits would still add up to a storm.
//
// It adapts like TCP congestion control: each throttled attempt halves the
// rate (down to a floor), each success adds back a twentieth of the
// configured rate, so a herald sharing the account with other clients
// settles under what AWS grants instead of hammering at a fixed rate.
type Budget struct {
	family  string
	limiter *rate.Limiter
	max     rate.Limit
	floor   rate.Limit

	mu sync.Mutex
}

// NewBudget returns a full bucket for family.
func NewBudget(family string, r Rate) (*Budget, error) {
	if r.QPS <= 0 || r.Burst < 1 {
		return nil, fmt.Errorf("%s rate %v/s burst %d: both must be positive", family, r.QPS, r.Burst)
	}
	b := &Budget{family: family, limiter: rate.NewLimiter(rate.Limit(r.QPS), r.Burst), max: rate.Limit(r.QPS),
		floor: rate.Limit(r.QPS / 16)}
	budgetQPS.WithLabelValues(family).Set(r.QPS)
	return b, nil
}

// Wait takes one token, waiting for it if needed.
func (b *Budget) Wait(ctx context.Context) error { return b.limiter.Wait(ctx) }

// Throttled halves the rate after AWS throttled an attempt.
func (b *Budget) Throttled() {
	b.mu.Lock()
	defer b.mu.Unlock()
	next := max(b.limiter.Limit()/2, b.floor)
	b.limiter.SetLimit(next)
	throttledTotal.WithLabelValues(b.family).Inc()
	budgetQPS.WithLabelValues(b.family).Set(float64(next))
}

// Succeeded recovers a step of the rate after a successful attempt.
func (b *Budget) Succeeded() {
	b.mu.Lock()
	defer b.mu.Unlock()
	current := b.limiter.Limit()
	if current >= b.max {
		return
	}
	next := min(current+b.max/20, b.max)
	b.limiter.SetLimit(next)
	budgetQPS.WithLabelValues(b.family).Set(float64(next))
}

// Limit is the current rate.
func (b *Budget) Limit() float64 { return float64(b.limiter.Limit()) }
