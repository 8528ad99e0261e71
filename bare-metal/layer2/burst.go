package layer2

import (
	"net/netip"
	"slices"
	"strings"
	"time"
)

// defaultBurst is when the gratuitous frames for a gained VIP go out,
// relative to the gain. The first announces at once (clients switch within
// milliseconds of it); the second, soon after, covers a frame lost while a
// switch relearns the port. The later two correct clients that cached the
// previous owner's answer during a make-before-break handover (both nodes
// answer for a moment) and outlast Linux's neighbour locktime (1 s), within
// which a non-gratuitous answer does not replace a fresh entry.
var defaultBurst = []time.Duration{0, 200 * time.Millisecond, 700 * time.Millisecond, 1500 * time.Millisecond}

// burstKey names one burst: a VIP on an interface.
type burstKey struct {
	iface string
	vip   netip.Addr
}

// burst is one VIP's progress through the offsets.
type burst struct {
	start time.Time
	// next indexes the next offset to send at.
	next int
	// announced is set once a frame of this burst went out.
	announced bool
}

// bursts is the gratuitous schedule: which bursts are in progress and when
// each sends next. It is a plain struct driven by explicit times, so its
// timing is tested as tables without a clock or goroutines.
type bursts struct {
	offsets []time.Duration
	active  map[burstKey]*burst
}

func newBursts(offsets []time.Duration) *bursts {
	return &bursts{offsets: offsets, active: map[burstKey]*burst{}}
}

// start begins k's burst at now, or begins it again: a VIP gained anew, or
// re-announced, gets the whole burst.
func (b *bursts) start(k burstKey, now time.Time) {
	if len(b.offsets) == 0 {
		return
	}
	b.active[k] = &burst{start: now}
}

// stop ends k's burst: the VIP is no longer announced there.
func (b *bursts) stop(k burstKey) { delete(b.active, k) }

// due returns the bursts with a send due at now, sorted, and moves each
// past every offset already reached: a loop that woke late sends once, not
// once per missed offset. Finished bursts are dropped.
func (b *bursts) due(now time.Time) []burstKey {
	var keys []burstKey
	for k, s := range b.active {
		if now.Before(s.start.Add(b.offsets[s.next])) {
			continue
		}
		keys = append(keys, k)
		for s.next < len(b.offsets) && !now.Before(s.start.Add(b.offsets[s.next])) {
			s.next++
		}
	}
	slices.SortFunc(keys, compareKeys)
	return keys
}

// sent records that a frame of k's burst went out, and reports whether it
// was the first.
func (b *bursts) sent(k burstKey) (first bool) {
	s, ok := b.active[k]
	if !ok || s.announced {
		return false
	}
	s.announced = true
	return true
}

// settle drops the bursts that have nothing left to send. Call it after
// due and sent.
func (b *bursts) settle() {
	for k, s := range b.active {
		if s.next >= len(b.offsets) {
			delete(b.active, k)
		}
	}
}

// next returns how long after now the next send is due, and false when no
// burst is in progress.
func (b *bursts) next(now time.Time) (time.Duration, bool) {
	var earliest time.Time
	for _, s := range b.active {
		if s.next >= len(b.offsets) {
			continue // finished; settle drops it
		}
		at := s.start.Add(b.offsets[s.next])
		if earliest.IsZero() || at.Before(earliest) {
			earliest = at
		}
	}
	if earliest.IsZero() {
		return 0, false
	}
	return max(earliest.Sub(now), 0), true
}

func compareKeys(a, b burstKey) int {
	if c := strings.Compare(a.iface, b.iface); c != 0 {
		return c
	}
	return a.vip.Compare(b.vip)
}
