package agent

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// healthState tracks what /readyz and /livez report.
//
// Ready means the node forwards service traffic: the first full sync
// succeeded. It stays true afterwards, since a later failure leaves the last
// good ruleset in place.
//
// Live means syncs keep happening: it turns false when a sync has been due
// for longer than threshold without one succeeding, which is what a hung nft
// or a wedged loop looks like. A sync is due from the first request after the
// last success, and in any case one sync period after the last success.
type healthState struct {
	clock      clock.PassiveClock
	syncPeriod time.Duration
	threshold  time.Duration

	mu          sync.Mutex
	queuedAt    time.Time // oldest request not yet served; zero if none
	lastSuccess time.Time
	ready       bool
	// forwarding is closed when ready first turns true (see Agent.Forwarding).
	forwarding chan struct{}
}

func newHealthState(clk clock.PassiveClock, syncPeriod, threshold time.Duration) *healthState {
	return &healthState{clock: clk, syncPeriod: syncPeriod, threshold: threshold, forwarding: make(chan struct{})}
}

func (h *healthState) queued() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.queuedAt.IsZero() {
		h.queuedAt = h.clock.Now()
	}
}

func (h *healthState) synced(full bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastSuccess = h.clock.Now()
	h.queuedAt = time.Time{}
	if full && !h.ready {
		h.ready = true
		close(h.forwarding)
	}
}

func (h *healthState) isReady() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ready
}

// live reports whether syncs keep up, and why not if they do not.
func (h *healthState) live() (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.clock.Now()
	due := h.queuedAt
	if !h.lastSuccess.IsZero() {
		periodic := h.lastSuccess.Add(h.syncPeriod)
		if due.IsZero() || periodic.Before(due) {
			due = periodic
		}
	}
	if due.IsZero() || now.Sub(due) <= h.threshold {
		return true, ""
	}
	last := "never"
	if !h.lastSuccess.IsZero() {
		last = h.lastSuccess.UTC().Format(time.RFC3339)
	}
	return false, fmt.Sprintf("a sync has been due for %v (threshold %v); last success: %s",
		now.Sub(due).Truncate(time.Millisecond), h.threshold, last)
}

func (h *healthState) healthy() bool {
	ok, _ := h.live()
	return ok
}

// handler serves /readyz, /livez and /healthz (the same as /livez, the path
// kube-proxy's probes use).
func (h *healthState) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if h.isReady() {
			writeText(w, http.StatusOK, "ok")
			return
		}
		writeText(w, http.StatusServiceUnavailable, "no successful full sync yet")
	})
	live := func(w http.ResponseWriter, _ *http.Request) {
		if ok, why := h.live(); !ok {
			writeText(w, http.StatusServiceUnavailable, why)
			return
		}
		writeText(w, http.StatusOK, "ok")
	}
	mux.HandleFunc("GET /livez", live)
	mux.HandleFunc("GET /healthz", live)
	return mux
}

func writeText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
}
