package ipam

import (
	"container/heap"
	"math/big"
	"net/netip"
)

// rangeState finds the lowest free address of a range without enumerating
// it: every free address below cursor sits in the freed heap, and the
// cursor only moves forward over addresses that are taken or never handed
// out. Work is therefore proportional to allocations, not to range size.
type rangeState struct {
	pool     *poolState
	r        Range
	excluded []Range // sorted, disjoint: owned by an earlier range
	exclIdx  int     // first excluded range not entirely below cursor

	cursor netip.Addr
	done   bool // cursor went past r.Last
	freed  addrHeap
	queued map[netip.Addr]struct{}
}

func newRangeState(p *poolState, r Range) *rangeState {
	return &rangeState{pool: p, r: r, cursor: r.First, queued: map[netip.Addr]struct{}{}}
}

// total counts the addresses this range hands out by itself (not the
// skipped ones), saturating. It runs once per configuration, so exact big
// arithmetic is affordable.
func (rs *rangeState) total() uint64 {
	n := rs.handedOut(rs.r)
	for _, e := range rs.excluded {
		n.Sub(n, rs.handedOut(e))
	}
	return saturate(n)
}

// handedOut counts the addresses of r that are not skipped.
func (rs *rangeState) handedOut(r Range) *big.Int {
	n := r.count()
	n.Sub(n, r.anycastCount())
	if rs.pool.cfg.AvoidBuggyIPs {
		n.Sub(n, new(big.Int).SetUint64(r.buggyCount()))
	}
	return n
}

// skips reports addresses the range never hands out by itself: IPv4 ones
// ending in .0 or .255 when the pool avoids them, and IPv6 Subnet-Router
// anycast addresses. A Service may still ask for the latter.
func (rs *rangeState) skips(a netip.Addr) bool {
	return rs.pool.cfg.AvoidBuggyIPs && isBuggy(a) || isSubnetRouterAnycast(a)
}

// peek returns the lowest address of the range that is free in used. It
// does not take the address; the caller commits it into used, which makes
// the next peek move on.
func (rs *rangeState) peek(used func(netip.Addr) bool) (netip.Addr, bool) {
	for rs.freed.Len() > 0 {
		a := rs.freed[0]
		if !used(a) && !rs.skips(a) {
			return a, true
		}
		heap.Pop(&rs.freed)
		delete(rs.queued, a)
	}
	for !rs.done {
		a := rs.cursor
		if e, ok := rs.excludedAt(a); ok {
			rs.moveAfter(e.Last)
			continue
		}
		if rs.skips(a) || used(a) {
			rs.moveAfter(a)
			continue
		}
		return a, true
	}
	return netip.Addr{}, false
}

func (rs *rangeState) moveAfter(a netip.Addr) {
	if a == rs.r.Last {
		rs.done = true
		return
	}
	rs.cursor = a.Next()
}

func (rs *rangeState) excludedAt(a netip.Addr) (Range, bool) {
	for rs.exclIdx < len(rs.excluded) && rs.excluded[rs.exclIdx].Last.Less(a) {
		rs.exclIdx++
	}
	if rs.exclIdx < len(rs.excluded) && rs.excluded[rs.exclIdx].Contains(a) {
		return rs.excluded[rs.exclIdx], true
	}
	return Range{}, false
}

// released is called for an address of this range that became free.
func (rs *rangeState) released(a netip.Addr) {
	if !rs.done && !a.Less(rs.cursor) {
		return // the cursor will reach it
	}
	if _, ok := rs.queued[a]; ok {
		return
	}
	rs.queued[a] = struct{}{}
	heap.Push(&rs.freed, a)
}

type addrHeap []netip.Addr

func (h addrHeap) Len() int           { return len(h) }
func (h addrHeap) Less(i, j int) bool { return h[i].Less(h[j]) }
func (h addrHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *addrHeap) Push(x any)        { *h = append(*h, x.(netip.Addr)) }
func (h *addrHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
