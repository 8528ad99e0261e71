package agent

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const ms = time.Millisecond

// simulate drives a schedule the way Runner.Loop does, on virtual time: at
// every trigger and every wake-up it decides, and calls take no time. It
// returns when the calls happened.
func simulate(cfg RunnerConfig, triggers []time.Duration, failing func(call int) bool, horizon time.Duration) []time.Duration {
	s := newSchedule(cfg)
	s.start(t0)
	wake := cfg.MaxInterval
	var calls []time.Duration
	for {
		now, trigger := wake, false
		if len(triggers) > 0 && triggers[0] <= wake {
			now, trigger, triggers = triggers[0], true, triggers[1:]
		}
		if now > horizon {
			return calls
		}
		if trigger {
			s.request()
		}
		for {
			run, wait := s.decide(t0.Add(now))
			if !run {
				wake = now + wait
				break
			}
			var err error
			if failing != nil && failing(len(calls)) {
				err = errors.New("boom")
			}
			calls = append(calls, now)
			s.done(t0.Add(now), err)
		}
	}
}

func every(step, until time.Duration) []time.Duration {
	var out []time.Duration
	for d := time.Duration(0); d <= until; d += step {
		out = append(out, d)
	}
	return out
}

func TestScheduleTiming(t *testing.T) {
	std := RunnerConfig{MinInterval: time.Second, MaxInterval: 10 * time.Second, Burst: 2}
	s := time.Second
	for _, tc := range []struct {
		name     string
		cfg      RunnerConfig
		triggers []time.Duration
		failing  func(int) bool
		horizon  time.Duration
		want     []time.Duration
	}{{
		name: "nothing asked: periodic only", cfg: std, horizon: 25 * s,
		want: []time.Duration{10 * s, 20 * s},
	}, {
		name: "one request runs at once, then periodic from that run", cfg: std,
		triggers: []time.Duration{3 * s}, horizon: 25 * s,
		want: []time.Duration{3 * s, 13 * s, 23 * s},
	}, {
		name: "burst back to back, then pending requests coalesce", cfg: std,
		triggers: []time.Duration{0, 0, 0, 0}, horizon: 12 * s,
		// the 3rd and 4th requests wait for the same token and share a call
		want: []time.Duration{0, 0, 1 * s, 11 * s},
	}, {
		name: "a stream of requests is coalesced to the rate", cfg: std,
		triggers: every(250*ms, 3*s), horizon: 5 * s,
		want: []time.Duration{0, 250 * ms, 1 * s, 2 * s, 3 * s},
	}, {
		name: "burst refills while idle", cfg: std,
		triggers: []time.Duration{0, 0, 5 * s, 5 * s, 5 * s}, horizon: 6 * s,
		want: []time.Duration{0, 0, 5 * s, 5 * s, 6 * s},
	}, {
		name: "no min interval: every request runs",
		cfg:  RunnerConfig{MaxInterval: 10 * s, Burst: 1}, triggers: []time.Duration{0, 100 * ms, 200 * ms}, horizon: 5 * s,
		want: []time.Duration{0, 100 * ms, 200 * ms},
	}, {
		name: "failures back off exponentially up to max interval",
		cfg:  RunnerConfig{MinInterval: s, MaxInterval: 10 * s, Burst: 1}, triggers: []time.Duration{0},
		failing: func(i int) bool { return i < 5 }, horizon: 36 * s,
		// retries after 1, 2, 4, 8, then capped at 10; success resets
		want: []time.Duration{0, 1 * s, 3 * s, 7 * s, 15 * s, 25 * s, 35 * s},
	}, {
		name: "a request during backoff runs at the rate, not the backoff",
		cfg:  RunnerConfig{MinInterval: s, MaxInterval: 60 * s, Burst: 1}, triggers: []time.Duration{0, 3500 * ms},
		failing: func(i int) bool { return i < 3 }, horizon: 10 * s,
		want: []time.Duration{0, 1 * s, 3 * s, 4 * s},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			got := simulate(tc.cfg, tc.triggers, tc.failing, tc.horizon)
			if !slices.Equal(got, tc.want) {
				t.Errorf("calls at\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestRunnerConfigValidate(t *testing.T) {
	for _, c := range []RunnerConfig{
		{MinInterval: -1, MaxInterval: time.Second, Burst: 1},
		{MinInterval: time.Second, MaxInterval: 0, Burst: 1},
		{MinInterval: 2 * time.Second, MaxInterval: time.Second, Burst: 1},
		{MinInterval: time.Second, MaxInterval: time.Second, Burst: 0},
	} {
		if c.Validate() == nil {
			t.Errorf("%+v: want an error", c)
		}
	}
}

// recv waits for a value the loop must produce. The timeout only guards
// against a hung test; it never paces it.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestRunnerLoopOnFakeClock(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clk := testingclock.NewFakeClock(t0)
	calls := make(chan time.Duration, 8)
	armed := make(chan time.Duration, 8)
	r, err := NewRunner("test", func(context.Context) error {
		calls <- clk.Since(t0)
		return nil
	}, RunnerConfig{MinInterval: time.Second, MaxInterval: 10 * time.Second, Burst: 1}, clk)
	if err != nil {
		t.Fatal(err)
	}
	r.armed = func(d time.Duration) { armed <- d }
	done := make(chan struct{})
	go func() { r.Loop(ctx); close(done) }()

	r.Run()
	if got := recv(t, calls, "first call"); got != 0 {
		t.Fatalf("first call at %v, want 0", got)
	}
	if w := recv(t, armed, "re-arm"); w != 10*time.Second {
		t.Fatalf("after a call, wait %v, want the max interval", w)
	}
	// The token is spent: a second request waits for the min interval.
	r.Run()
	if w := recv(t, armed, "re-arm"); w != time.Second {
		t.Fatalf("rate-limited request waits %v, want 1s", w)
	}
	select {
	case c := <-calls:
		t.Fatalf("call at %v before the min interval", c)
	default:
	}
	clk.Step(time.Second)
	if got := recv(t, calls, "rate-limited call"); got != time.Second {
		t.Fatalf("rate-limited call at %v, want 1s", got)
	}
	recv(t, armed, "re-arm")
	clk.Step(10 * time.Second)
	if got := recv(t, calls, "periodic call"); got != 11*time.Second {
		t.Fatalf("periodic call at %v, want 11s", got)
	}
	recv(t, armed, "re-arm")
	cancel()
	recv(t, done, "loop exit")
}
