package agent

import (
	"context"
	"fmt"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// Runner calls a function when asked to, but at a bounded frequency: at most
// Burst calls back to back, then one per MinInterval, and at least one every
// MaxInterval even when nobody asks (the periodic resync). A failed call is
// retried with exponential backoff starting at max(MinInterval, 1s), capped
// at MaxInterval. Requests that arrive while the function runs are coalesced
// into one call after it.
//
// It plays the part of kube-proxy's async.BoundedFrequencyRunner. The timing
// decisions live in schedule, a plain struct driven by explicit times, so
// that they can be tested as tables without a clock or goroutines.
type Runner struct {
	name    string
	fn      func(context.Context) error
	clock   clock.WithTicker
	trigger chan struct{}
	sched   schedule
	// armed, when set (tests only), is told each time the loop goes back to
	// waiting, and for how long, so tests can step a fake clock without races.
	armed func(wait time.Duration)
}

// RunnerConfig bounds how often a Runner calls its function.
type RunnerConfig struct {
	// MinInterval is the spacing of calls once the burst is used up; 0 means
	// no rate limit.
	MinInterval time.Duration
	// MaxInterval is the longest time between two calls.
	MaxInterval time.Duration
	// Burst is how many calls may run back to back; at least 1.
	Burst int
}

// Validate reports a configuration the Runner cannot honour.
func (c RunnerConfig) Validate() error {
	switch {
	case c.MinInterval < 0:
		return fmt.Errorf("min interval %v is negative", c.MinInterval)
	case c.MaxInterval <= 0:
		return fmt.Errorf("max interval %v must be positive", c.MaxInterval)
	case c.MaxInterval < c.MinInterval:
		return fmt.Errorf("max interval %v is shorter than min interval %v", c.MaxInterval, c.MinInterval)
	case c.Burst < 1:
		return fmt.Errorf("burst %d must be at least 1", c.Burst)
	}
	return nil
}

// NewRunner returns a Runner that calls fn; cfg must be valid.
func NewRunner(name string, fn func(context.Context) error, cfg RunnerConfig, clk clock.WithTicker) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("runner %s: %w", name, err)
	}
	return &Runner{
		name:    name,
		fn:      fn,
		clock:   clk,
		trigger: make(chan struct{}, 1),
		sched:   newSchedule(cfg),
	}, nil
}

// Run asks for a call. It never blocks: a request made while another is
// pending is the same request.
func (r *Runner) Run() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// Loop calls the function as scheduled until ctx ends. The first periodic
// call is due MaxInterval after Loop starts; ask with Run for an earlier one.
func (r *Runner) Loop(ctx context.Context) {
	logger := klog.FromContext(ctx).WithValues("runner", r.name)
	r.sched.start(r.clock.Now())
	timer := r.clock.NewTimer(r.sched.cfg.MaxInterval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.trigger:
			r.sched.request()
		case <-timer.C():
		}
		var wait time.Duration
		for {
			run, w := r.sched.decide(r.clock.Now())
			if !run {
				wait = w
				break
			}
			err := r.fn(ctx)
			if ctx.Err() != nil {
				return
			}
			retry := r.sched.done(r.clock.Now(), err)
			if err != nil {
				logger.V(2).Info("Scheduling retry", "after", retry, "err", err)
			}
		}
		// A fired but unread timer would hold a stale tick; drop it so the
		// next wake-up is the one decided here.
		if !timer.Stop() {
			select {
			case <-timer.C():
			default:
			}
		}
		timer.Reset(wait)
		if r.armed != nil {
			r.armed(wait)
		}
	}
}

// schedule decides when a Runner calls its function. Times are passed in,
// never read, so any sequence of events can be replayed exactly.
type schedule struct {
	cfg RunnerConfig
	// token bucket: Burst tokens, one more every MinInterval
	tokens   float64
	refilled time.Time
	lastRun  time.Time
	pending  bool
	failures int
	retryAt  time.Time // zero unless the last call failed
}

func newSchedule(cfg RunnerConfig) schedule {
	return schedule{cfg: cfg, tokens: float64(cfg.Burst)}
}

func (s *schedule) start(now time.Time) {
	s.refilled, s.lastRun = now, now
}

func (s *schedule) request() { s.pending = true }

// decide says whether to call now (taking a token if so) and, if not, how
// long to wait before deciding again.
func (s *schedule) decide(now time.Time) (run bool, wait time.Duration) {
	s.refill(now)
	periodicAt := s.lastRun.Add(s.cfg.MaxInterval)
	retrying := !s.retryAt.IsZero()
	due := s.pending || !now.Before(periodicAt) || (retrying && !now.Before(s.retryAt))
	if due && s.tokens >= 1 {
		s.tokens--
		return true, 0
	}
	wait = periodicAt.Sub(now)
	if retrying {
		wait = min(wait, s.retryAt.Sub(now))
	}
	if due {
		// only a token is missing
		wait = time.Duration((1 - s.tokens) * float64(s.cfg.MinInterval))
	}
	// Rounding can leave a token a hair short of 1: never spin on a zero wait.
	return false, max(wait, time.Millisecond)
}

func (s *schedule) refill(now time.Time) {
	if s.cfg.MinInterval == 0 {
		s.tokens = float64(s.cfg.Burst)
		return
	}
	if elapsed := now.Sub(s.refilled); elapsed > 0 {
		s.tokens = min(float64(s.cfg.Burst), s.tokens+float64(elapsed)/float64(s.cfg.MinInterval))
		s.refilled = now
	}
}

// done records a call that ended at now and returns the retry delay if it
// failed.
func (s *schedule) done(now time.Time, err error) time.Duration {
	s.lastRun = now
	s.pending = false
	if err == nil {
		s.failures, s.retryAt = 0, time.Time{}
		return 0
	}
	s.failures++
	d := s.backoff()
	s.retryAt = now.Add(d)
	return d
}

func (s *schedule) backoff() time.Duration {
	d := max(s.cfg.MinInterval, time.Second)
	for i := 1; i < s.failures && d < s.cfg.MaxInterval; i++ {
		d *= 2
	}
	return min(d, s.cfg.MaxInterval)
}
