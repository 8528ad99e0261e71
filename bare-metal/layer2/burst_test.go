package layer2

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

// TestBursts walks the schedule through explicit times: each step is a
// moment, what it does first, which bursts must send then, and when the
// next send is due.
func TestBursts(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := time.Millisecond
	a := burstKey{iface: "eth0", vip: vipA}
	b := burstKey{iface: "eth0", vip: vip6A}
	c := burstKey{iface: "eth1", vip: vipA}
	type step struct {
		at       time.Duration
		do       func(*bursts, time.Time)
		send     []burstKey
		next     time.Duration
		finished bool // no burst pending after this step
	}
	start := func(ks ...burstKey) func(*bursts, time.Time) {
		return func(s *bursts, now time.Time) {
			for _, k := range ks {
				s.start(k, now)
			}
		}
	}
	stop := func(k burstKey) func(*bursts, time.Time) { return func(s *bursts, _ time.Time) { s.stop(k) } }
	tests := []struct {
		name    string
		offsets []time.Duration
		steps   []step
	}{
		{name: "one burst at each offset", offsets: defaultBurst, steps: []step{
			{at: 0, do: start(a), send: []burstKey{a}, next: 200 * ms},
			{at: 100 * ms, next: 100 * ms},
			{at: 200 * ms, send: []burstKey{a}, next: 500 * ms},
			{at: 700 * ms, send: []burstKey{a}, next: 800 * ms},
			{at: 1500 * ms, send: []burstKey{a}, finished: true},
		}},
		{name: "a late wake-up sends once and skips the offsets it missed", offsets: defaultBurst, steps: []step{
			{at: 0, do: start(a), send: []burstKey{a}, next: 200 * ms},
			{at: 800 * ms, send: []burstKey{a}, next: 700 * ms},
			{at: 1500 * ms, send: []burstKey{a}, finished: true},
		}},
		{name: "independent bursts, sorted by interface and VIP", offsets: defaultBurst, steps: []step{
			{at: 0, do: start(c, b, a), send: []burstKey{a, b, c}, next: 200 * ms},
			{at: 100 * ms, do: start(a), send: []burstKey{a}, next: 100 * ms},
			{at: 200 * ms, send: []burstKey{b, c}, next: 100 * ms},
			{at: 300 * ms, send: []burstKey{a}, next: 400 * ms}, // b and c at 700 ms, a at 800 ms
		}},
		{name: "stop ends a burst in progress", offsets: defaultBurst, steps: []step{
			{at: 0, do: start(a, b), send: []burstKey{a, b}, next: 200 * ms},
			{at: 50 * ms, do: stop(a), next: 150 * ms},
			{at: 200 * ms, send: []burstKey{b}, next: 500 * ms},
			{at: 300 * ms, do: stop(b), finished: true},
		}},
		{name: "restart begins the whole burst again", offsets: []time.Duration{0, 100 * ms}, steps: []step{
			{at: 0, do: start(a), send: []burstKey{a}, next: 100 * ms},
			{at: 100 * ms, send: []burstKey{a}, finished: true},
			{at: 500 * ms, do: start(a), send: []burstKey{a}, next: 100 * ms},
			{at: 600 * ms, send: []burstKey{a}, finished: true},
		}},
		{name: "no offsets: no burst", offsets: []time.Duration{}, steps: []step{
			{at: 0, do: start(a), finished: true},
		}},
		{name: "first send may be delayed", offsets: []time.Duration{50 * ms}, steps: []step{
			{at: 0, do: start(a), next: 50 * ms},
			{at: 50 * ms, send: []burstKey{a}, finished: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newBursts(tt.offsets)
			for i, st := range tt.steps {
				now := t0.Add(st.at)
				if st.do != nil {
					st.do(s, now)
				}
				got := s.due(now)
				s.settle()
				if !slices.Equal(got, st.send) {
					t.Fatalf("step %d (%v): due %v, want %v", i, st.at, got, st.send)
				}
				next, pending := s.next(now)
				if pending == st.finished || (pending && next != st.next) {
					t.Fatalf("step %d (%v): next %v pending %v, want %v pending %v", i, st.at, next, pending,
						st.next, !st.finished)
				}
			}
		})
	}
}

// TestBurstsFirstSent: sent reports only the first frame of each burst, so
// OnAnnounced fires once per gain, also when the first frame was fenced.
func TestBurstsFirstSent(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := newBursts([]time.Duration{0, time.Second})
	k := burstKey{iface: "eth0", vip: netip.MustParseAddr("192.0.2.1")}
	s.start(k, t0)
	s.due(t0) // fenced: not sent
	if got := s.due(t0.Add(time.Second)); len(got) != 1 {
		t.Fatalf("due %v", got)
	}
	if !s.sent(k) {
		t.Error("first frame sent: not reported as first")
	}
	if s.sent(k) {
		t.Error("second frame reported as first")
	}
	s.settle()
	if s.sent(k) {
		t.Error("finished burst reported as first")
	}
}
