package election

import (
	"testing"
	"time"
)

var fenceCfg = FenceConfig{SilenceTimeout: 250 * time.Millisecond, Settle: time.Second}

// at is a time n milliseconds after an arbitrary origin.
func at(ms int) time.Time { return time.Unix(1_000_000, 0).Add(time.Duration(ms) * time.Millisecond) }

func healthy(lastHeardMs int) Health {
	return Health{LastHeard: at(lastHeardMs), Peers: 2, Reachable: 3, Expected: 3}
}

func TestFenceUpdate(t *testing.T) {
	type step struct {
		now      int // ms
		h        Health
		wantOpen bool
		want     Reason
		wantNext int // ms; -1: zero
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"starts closed, opens after settling", []step{
			{0, healthy(0), false, ReasonSettling, 1000},
			{999, healthy(990), false, ReasonSettling, 1000},
			{1000, healthy(990), true, "", 1240},
		}},
		{"single node: no peers, no quorum needed", []step{
			{0, Health{Reachable: 1, Expected: 1}, false, ReasonSettling, 1000},
			{1000, Health{Reachable: 1, Expected: 1}, true, "", -1},
		}},
		{"single node not yet known to Kubernetes", []step{
			{0, Health{Reachable: 0, Expected: 0}, false, ReasonSettling, 1000},
			{1000, Health{Reachable: 0, Expected: 0}, true, "", -1},
		}},
		{"lost quorum: closed at once, settles again after", []step{
			{0, healthy(0), false, ReasonSettling, 1000},
			{1000, healthy(1000), true, "", 1250},
			{1100, Health{LastHeard: at(1100), Peers: 1, Reachable: 1, Expected: 3}, false, ReasonNoQuorum, -1},
			{1200, healthy(1200), false, ReasonSettling, 2200},
			{2200, healthy(2200), true, "", 2450},
		}},
		{"two of three alive is a quorum", []step{
			{0, Health{LastHeard: at(0), Peers: 1, Reachable: 2, Expected: 3}, false, ReasonSettling, 1000},
			{1000, Health{LastHeard: at(1000), Peers: 1, Reachable: 2, Expected: 3}, true, "", 1250},
		}},
		{"one of two alive is not: the apiserver must break the tie", []step{
			{0, Health{Reachable: 1, Expected: 2}, false, ReasonNoQuorum, -1},
			{5000, Health{Reachable: 1, Expected: 1}, false, ReasonSettling, 6000}, // Kubernetes marked the peer NotReady
		}},
		{"an agent that left is no longer expected", []step{
			{0, Health{Reachable: 1, Expected: 1}, false, ReasonSettling, 1000},
		}},
		{"nothing heard for longer than F closes; hearing again does not reopen before settling", []step{
			{0, healthy(0), false, ReasonSettling, 1000},
			{1000, healthy(1000), true, "", 1250},
			{1250, healthy(1000), true, "", 1250}, // exactly F: still open
			{1251, healthy(1000), false, ReasonCutOff, -1},
			{1300, healthy(1300), false, ReasonSettling, 2300},
			{2300, healthy(2300), true, "", 2550},
		}},
		{"peers but never heard", []step{
			{0, Health{Peers: 2, Reachable: 3, Expected: 3}, false, ReasonCutOff, -1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFence(fenceCfg)
			for i, s := range tt.steps {
				open, reason, next := f.Update(at(s.now), s.h)
				wantNext := time.Time{}
				if s.wantNext >= 0 {
					wantNext = at(s.wantNext)
				}
				if open != s.wantOpen || reason != s.want || !next.Equal(wantNext) {
					t.Fatalf("step %d at %d ms: Update = %v, %q, next %v; want %v, %q, next %v",
						i, s.now, open, reason, next.Sub(at(0)), s.wantOpen, s.want, wantNext.Sub(at(0)))
				}
			}
		})
	}
}

// Open applies the silence rule at the moment of sending, so a node cut
// off between two Updates still falls silent F after it last heard a peer;
// and once it has refused a frame it stays silent until an Update sees the
// conditions hold for Settle, even if it hears its peers again at once.
func TestFenceOpenChecksEveryFrame(t *testing.T) {
	f := NewFence(fenceCfg)
	f.Update(at(0), healthy(0))
	if open, _, _ := f.Update(at(1000), healthy(1000)); !open {
		t.Fatal("fence did not open after settling")
	}
	if !f.Open(at(1200), at(1000)) {
		t.Fatal("frame 200 ms after a peer was last heard refused")
	}
	if f.Open(at(1251), at(1000)) {
		t.Fatal("frame 251 ms after a peer was last heard (F = 250 ms) allowed")
	}
	if f.Open(at(1300), at(1290)) {
		t.Fatal("hearing a peer again reopened the fence without an Update and settling")
	}
	if open, reason, _ := f.Update(at(1300), healthy(1290)); open || reason != ReasonSettling {
		t.Fatalf("Update after a refused frame = %v %q, want settling", open, reason)
	}
	if f.Open(at(1400), at(1390)) {
		t.Fatal("frame allowed while settling")
	}
	if open, _, _ := f.Update(at(2300), healthy(2290)); !open || !f.Open(at(2300), at(2290)) {
		t.Fatal("fence did not reopen after settling")
	}
}

// The guarantee of the package doc, checked as arithmetic over the worst
// case: the cut-off owner's last allowed frame comes before the earliest
// moment any peer may declare it dead, for every phase of the cut relative
// to the owner's probes and the peers' probes.
func TestFenceBoundBeatsEarliestDeath(t *testing.T) {
	const (
		interval = 100 * time.Millisecond
		mult     = 3
		rtt      = 2 * time.Millisecond
	)
	deadAfter := interval + mult*interval
	if err := fenceCfg.Validate(interval, deadAfter-rtt); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	for cutMs := 0; cutMs < 200; cutMs++ {
		cut := at(1000 + cutMs)
		// The owner hears a peer every heartbeat (half a probe interval),
		// rtt/2 after it left; the last one before the cut is the latest
		// one at or before it.
		var lastHeard time.Time
		for p := at(1000 - 200); !p.Add(rtt / 2).After(cut); p = p.Add(interval / 2) {
			lastHeard = p.Add(rtt / 2)
		}
		f := NewFence(fenceCfg)
		f.Update(at(0), healthy(0))
		f.Update(at(999), Health{LastHeard: at(999), Peers: 2, Reachable: 3, Expected: 3})
		f.Update(at(1000), Health{LastHeard: at(1000), Peers: 2, Reachable: 3, Expected: 3})
		// A peer's failing probe can leave no earlier than cut - rtt.
		earliestDeath := cut.Add(-rtt).Add(deadAfter)
		for now := cut; now.Before(earliestDeath.Add(time.Millisecond)); now = now.Add(time.Millisecond) {
			if !now.Before(earliestDeath) && f.Open(now, lastHeard) {
				t.Fatalf("cut at +%d ms: owner still answers at %v, when a peer may already have declared it dead (%v)",
					cutMs, now.Sub(cut), earliestDeath.Sub(cut))
			}
		}
	}
}

func TestFenceConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		cfg      FenceConfig
		interval time.Duration
		dead     time.Duration
		ok       bool
	}{
		{FenceConfig{SilenceTimeout: 250 * time.Millisecond, Settle: time.Second}, 100 * time.Millisecond, 400 * time.Millisecond, true},
		{FenceConfig{SilenceTimeout: 200 * time.Millisecond}, 100 * time.Millisecond, 400 * time.Millisecond, false},
		{FenceConfig{SilenceTimeout: 400 * time.Millisecond}, 100 * time.Millisecond, 400 * time.Millisecond, false},
		{FenceConfig{SilenceTimeout: 250 * time.Millisecond, Settle: -1}, 100 * time.Millisecond, 400 * time.Millisecond, false},
	} {
		if err := tt.cfg.Validate(tt.interval, tt.dead); (err == nil) != tt.ok {
			t.Errorf("%+v.Validate(%v, %v) = %v, want ok=%v", tt.cfg, tt.interval, tt.dead, err, tt.ok)
		}
	}
}
