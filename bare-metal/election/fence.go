package election

import (
	"fmt"
	"sync"
	"time"
)

// Reasons the fence is closed.
const (
	// ReasonStarting: the fence has not seen its conditions hold yet.
	ReasonStarting Reason = "Starting"
	// ReasonNoQuorum: the node sees no more than half of the nodes that
	// should run herald-agent alive.
	ReasonNoQuorum Reason = "NoQuorum"
	// ReasonCutOff: the node has heard nothing from its peers (no ack to
	// its probes, no heartbeat) within SilenceTimeout: it is likely cut off.
	ReasonCutOff Reason = "CutOff"
	// ReasonSettling: the conditions hold again, but not for Settle yet.
	ReasonSettling Reason = "Settling"
)

// FenceConfig bounds the fence; see the package doc for the rule and why
// it holds.
type FenceConfig struct {
	// SilenceTimeout (F): a node with peers that has heard nothing from
	// any of them for this long answers nothing.
	SilenceTimeout time.Duration
	// Settle (S): once closed, the fence opens only after its conditions
	// have held this long, so a node that was cut off announces again only
	// when its view of the membership has caught up.
	Settle time.Duration
}

// Validate checks the config against the membership's failure detector:
// SilenceTimeout must outlast two probe intervals, so that scheduling
// hiccups of a loaded node do not fence it, and must end before the
// earliest moment peers can declare this node dead (deadAfter), or the
// guarantee is void.
func (c FenceConfig) Validate(probeInterval, deadAfter time.Duration) error {
	switch {
	case c.SilenceTimeout <= 2*probeInterval:
		return fmt.Errorf("silence timeout %v must exceed two probe intervals (%v)", c.SilenceTimeout, 2*probeInterval)
	case c.SilenceTimeout >= deadAfter:
		return fmt.Errorf("silence timeout %v must be shorter than the earliest time peers may declare a node dead (%v)", c.SilenceTimeout, deadAfter)
	case c.Settle < 0:
		return fmt.Errorf("settle time %v is negative", c.Settle)
	}
	return nil
}

// Health is the membership as one node sees it at one moment.
type Health struct {
	// LastHeard is when the node last heard from any peer: an ack to one of
	// its probes or a heartbeat.
	LastHeard time.Time
	// Peers is how many other members the node probes (alive or suspect in
	// its view). Without peers, nothing can be heard.
	Peers int
	// Reachable is how many of the Expected nodes the node sees alive,
	// itself included.
	Reachable int
	// Expected is how many nodes should run a herald-agent that announces,
	// this one included; at most 1 needs no quorum.
	Expected int
}

// Fence decides whether this node may answer at all. It is safe for
// concurrent use: Open is called by the responders on every frame they
// send, Update by the speaker on every membership change and tick.
type Fence struct {
	cfg FenceConfig

	mu     sync.Mutex
	reason Reason    // why closed; "" when open
	holds  time.Time // since when the conditions hold; zero when they do not
	peers  int       // Health.Peers at the last Update
}

// NewFence returns a closed fence.
func NewFence(cfg FenceConfig) *Fence {
	return &Fence{cfg: cfg, reason: ReasonStarting}
}

// Update re-evaluates the fence at now. It returns whether the fence is
// open, why not, and when its state changes next if nothing else does
// (zero when only an event can change it).
func (f *Fence) Update(now time.Time, h Health) (open bool, reason Reason, next time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peers = h.Peers
	switch {
	case h.Expected > 1 && 2*h.Reachable <= h.Expected:
		f.close(ReasonNoQuorum)
		return false, f.reason, time.Time{}
	case h.Peers > 0 && now.Sub(h.LastHeard) > f.cfg.SilenceTimeout:
		f.close(ReasonCutOff)
		return false, f.reason, time.Time{}
	}
	if f.holds.IsZero() {
		f.holds = now
	}
	if f.reason != "" {
		if opensAt := f.holds.Add(f.cfg.Settle); now.Before(opensAt) {
			f.reason = ReasonSettling
			return false, f.reason, opensAt
		}
		f.reason = ""
	}
	if h.Peers > 0 {
		return true, "", h.LastHeard.Add(f.cfg.SilenceTimeout)
	}
	return true, "", time.Time{}
}

// Open reports whether the node may send a frame at now. It applies the
// silence rule itself at now, with the latest time a peer was heard,
// instead of trusting the last Update: the timing bound holds only if
// every frame is checked when it is sent. A frame refused by the silence
// rule closes the fence until the next Update finds the conditions holding
// for Settle.
func (f *Fence) Open(now, lastHeard time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reason != "" {
		return false
	}
	if f.peers > 0 && now.Sub(lastHeard) > f.cfg.SilenceTimeout {
		f.close(ReasonCutOff)
		return false
	}
	return true
}

func (f *Fence) close(reason Reason) {
	f.reason, f.holds = reason, time.Time{}
}
