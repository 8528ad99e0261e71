package election

import (
	"net/netip"
	"slices"
	"time"
)

// Planner turns owner decisions into what this node announces now, with
// make-before-break handovers: a node that loses an address to a live node
// keeps announcing it until the new owner says it has taken over (its
// takeover notice), or ReleaseTimeout passes. An address whose owner is
// gone (no owner at all, or this node fenced) stops at once: there is
// nobody to hand over to, or answering is no longer safe.
//
// Not safe for concurrent use: the speaker's sync loop owns it.
type Planner struct {
	self           string
	releaseTimeout time.Duration
	held           map[netip.Addr]*holding
	// notices are the takeover notices received, by address.
	notices map[netip.Addr]notice
}

type holding struct {
	// releasing: another node owns the address now; this one answers until
	// that node's notice arrives or until.
	releasing bool
	to        string
	since     time.Time
	until     time.Time
}

type notice struct {
	from string
	at   time.Time
}

// Plan is the outcome of one Evaluate.
type Plan struct {
	// Announce is every address this node answers for, sorted.
	Announce []netip.Addr
	// Gained are the addresses this node starts announcing as owner (or
	// takes back while it was handing them over): they need gratuitous
	// announcements and a takeover notice to the other nodes.
	Gained []netip.Addr
	// Stopped are the addresses this node no longer announces.
	Stopped []netip.Addr
	// Next is when a handover times out if nothing else happens first;
	// zero when none is pending.
	Next time.Time
}

// NewPlanner returns a Planner for the node self.
func NewPlanner(self string, releaseTimeout time.Duration) *Planner {
	return &Planner{self: self, releaseTimeout: releaseTimeout,
		held: map[netip.Addr]*holding{}, notices: map[netip.Addr]notice{}}
}

// TookOver records a takeover notice: node from announces addr since at.
// The notice may come before this node's own view has moved the address
// (the other node's informers were faster); Evaluate honours notices up to
// ReleaseTimeout old.
func (p *Planner) TookOver(addr netip.Addr, from string, at time.Time) {
	if from != p.self {
		p.notices[addr] = notice{from: from, at: at}
	}
}

// Evaluate decides what to announce at now. owners holds the elected
// owner of every address this node may have to announce ("" when none may
// announce it); open is the fence.
func (p *Planner) Evaluate(now time.Time, owners map[netip.Addr]string, open bool) Plan {
	var plan Plan
	for addr, owner := range owners {
		if owner == p.self && open {
			if h, ok := p.held[addr]; !ok || h.releasing {
				plan.Gained = append(plan.Gained, addr)
			}
			p.held[addr] = &holding{}
		}
	}
	for addr, h := range p.held {
		owner, known := owners[addr]
		switch {
		case owner == p.self && open:
			continue
		case !known || owner == "" || !open:
			p.stop(&plan, addr)
			continue
		case !h.releasing || h.to != owner:
			*h = holding{releasing: true, to: owner, since: now, until: now.Add(p.releaseTimeout)}
		}
		if n, ok := p.notices[addr]; ok && n.from == h.to && !n.at.Before(h.since.Add(-p.releaseTimeout)) || !now.Before(h.until) {
			p.stop(&plan, addr)
			continue
		}
		if plan.Next.IsZero() || h.until.Before(plan.Next) {
			plan.Next = h.until
		}
	}
	for addr, n := range p.notices {
		if now.Sub(n.at) > p.releaseTimeout {
			delete(p.notices, addr)
		}
	}
	for addr := range p.held {
		plan.Announce = append(plan.Announce, addr)
	}
	for _, list := range [][]netip.Addr{plan.Announce, plan.Gained, plan.Stopped} {
		slices.SortFunc(list, netip.Addr.Compare)
	}
	return plan
}

func (p *Planner) stop(plan *Plan, addr netip.Addr) {
	delete(p.held, addr)
	plan.Stopped = append(plan.Stopped, addr)
}

// Holds reports whether the node announces any address; a draining agent
// waits for this to turn false (every address handed over) before it
// leaves.
func (p *Planner) Holds() bool { return len(p.held) > 0 }
