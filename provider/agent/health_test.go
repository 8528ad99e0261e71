package agent

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

func TestLiveness(t *testing.T) {
	const period, threshold = 30 * time.Second, 60 * time.Second
	type step struct {
		at     time.Duration // since t0
		event  string        // "queue", "success", "full" or "" (just look)
		live   bool
		ready  bool
		reason string
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{{
		name: "nothing due yet",
		steps: []step{
			{at: 0, live: true},
			{at: time.Hour, live: true},
		},
	}, {
		name: "first sync never succeeds",
		steps: []step{
			{at: 0, event: "queue", live: true},
			{at: threshold, live: true},
			{at: threshold + time.Second, live: false,
				reason: "a sync has been due for 1m1s (threshold 1m0s); last success: never"},
		},
	}, {
		name: "partial success does not make ready, full does",
		steps: []step{
			{at: 0, event: "queue", live: true},
			{at: time.Second, event: "success", live: true},
			{at: 2 * time.Second, event: "full", live: true, ready: true},
		},
	}, {
		name: "periodic syncs are due even without requests",
		steps: []step{
			{at: 0, event: "full", live: true, ready: true},
			{at: period + threshold, live: true, ready: true},
			{at: period + threshold + time.Millisecond, live: false, ready: true,
				reason: "a sync has been due for 1m0.001s (threshold 1m0s); last success: 2026-01-02T03:04:05Z"},
			{at: period + threshold + time.Second, event: "success", live: true, ready: true},
		},
	}, {
		name: "a request long unserved fails before the periodic deadline",
		steps: []step{
			{at: 0, event: "full", live: true, ready: true},
			{at: time.Second, event: "queue", live: true, ready: true},
			{at: time.Second + threshold + time.Second, live: false, ready: true,
				reason: "a sync has been due for 1m1s (threshold 1m0s); last success: 2026-01-02T03:04:05Z"},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			clk := testingclock.NewFakeClock(t0)
			h := newHealthState(clk, period, threshold)
			for i, s := range tc.steps {
				clk.SetTime(t0.Add(s.at))
				switch s.event {
				case "queue":
					h.queued()
				case "success":
					h.synced(false)
				case "full":
					h.synced(true)
				}
				live, why := h.live()
				if live != s.live || why != s.reason || h.isReady() != s.ready {
					t.Errorf("step %d: live=%t %q ready=%t, want live=%t %q ready=%t",
						i, live, why, h.isReady(), s.live, s.reason, s.ready)
				}
				if forwarding := isClosed(h.forwarding); forwarding != s.ready {
					t.Errorf("step %d: Forwarding closed=%t, want %t (announcers wait for it)", i, forwarding, s.ready)
				}
			}
		})
	}
}

func TestHealthHandler(t *testing.T) {
	clk := testingclock.NewFakeClock(t0)
	h := newHealthState(clk, time.Second, time.Second)
	srv := httptest.NewServer(h.handler())
	defer srv.Close()
	codes := func() [3]int {
		var out [3]int
		for i, path := range []string{"/readyz", "/livez", "/healthz"} {
			out[i] = get(t, srv.Client(), srv.URL+path).code
		}
		return out
	}
	const ok, unavailable = http.StatusOK, http.StatusServiceUnavailable
	h.queued()
	if got := codes(); got != [3]int{unavailable, ok, ok} {
		t.Errorf("starting: %v", got)
	}
	h.synced(true)
	if got := codes(); got != [3]int{ok, ok, ok} {
		t.Errorf("after the first full sync: %v", got)
	}
	clk.Step(time.Minute)
	if got := codes(); got != [3]int{ok, unavailable, unavailable} {
		t.Errorf("stuck: %v", got)
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
