package election

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

var (
	vipA = netip.MustParseAddr("192.0.2.200")
	vipB = netip.MustParseAddr("2001:db8::200")
)

func TestPlanner(t *testing.T) {
	const timeout = 2 * time.Second
	type step struct {
		now     int // ms
		notice  *struct{ from string }
		owners  map[netip.Addr]string
		open    bool
		want    []netip.Addr // Announce
		gained  []netip.Addr
		stopped []netip.Addr
		next    int // ms; -1 zero
	}
	notice := func(from string) *struct{ from string } { return &struct{ from string }{from} }
	tests := []struct {
		name  string
		steps []step
	}{
		{"gain, keep, lose to nobody", []step{
			{now: 0, owners: map[netip.Addr]string{vipA: "me", vipB: "me"}, open: true,
				want: []netip.Addr{vipA, vipB}, gained: []netip.Addr{vipA, vipB}, next: -1},
			{now: 10, owners: map[netip.Addr]string{vipA: "me", vipB: "me"}, open: true,
				want: []netip.Addr{vipA, vipB}, next: -1},
			{now: 20, owners: map[netip.Addr]string{vipA: ""}, open: true,
				stopped: []netip.Addr{vipA, vipB}, next: -1},
		}},
		{"fence closes: everything stops at once, no handover", []step{
			{now: 0, owners: map[netip.Addr]string{vipA: "me"}, open: true, want: []netip.Addr{vipA}, gained: []netip.Addr{vipA}, next: -1},
			{now: 10, owners: map[netip.Addr]string{vipA: "me"}, open: false, stopped: []netip.Addr{vipA}, next: -1},
			{now: 20, owners: map[netip.Addr]string{vipA: "me"}, open: false, next: -1},
			{now: 30, owners: map[netip.Addr]string{vipA: "me"}, open: true, want: []netip.Addr{vipA}, gained: []netip.Addr{vipA}, next: -1},
		}},
		{"planned handover: keep answering until the new owner's notice", []step{
			{now: 0, owners: map[netip.Addr]string{vipA: "me"}, open: true, want: []netip.Addr{vipA}, gained: []netip.Addr{vipA}, next: -1},
			{now: 100, owners: map[netip.Addr]string{vipA: "n2"}, open: true, want: []netip.Addr{vipA}, next: 2100},
			{now: 150, notice: notice("n3"), owners: map[netip.Addr]string{vipA: "n2"}, open: true, want: []netip.Addr{vipA}, next: 2100},
			{now: 200, notice: notice("n2"), owners: map[netip.Addr]string{vipA: "n2"}, open: true, stopped: []netip.Addr{vipA}, next: -1},
		}},
		{"notice that came before this node saw the change", []step{
			{now: 0, owners: map[netip.Addr]string{vipA: "me"}, open: true, want: []netip.Addr{vipA}, gained: []netip.Addr{vipA}, next: -1},
			{now: 50, notice: notice("n2"), owners: map[netip.Addr]string{vipA: "me"}, open: true, want: []netip.Addr{vipA}, next: -1},
			{now: 100, owners: map[netip.Addr]string{vipA: "n2"}, open: true, stopped: []netip.Addr{vipA}, next: -1},
		}},
		{"handover times out without a notice", []step{
			{now: 0, owners: map[netip.Addr]string{vipA: "me"}, open: true, want: []netip.Addr{vipA}, gained: []netip.Addr{vipA}, next: -1},
			{now: 100, owners: map[netip.Addr]string{vipA: "n2"}, open: true, want: []netip.Addr{vipA}, next: 2100},
			{now: 2099, owners: map[netip.Addr]string{vipA: "n2"}, open: true, want: []netip.Addr{vipA}, next: 2100},
			{now: 2100, owners: map[netip.Addr]string{vipA: "n2"}, open: true, stopped: []netip.Addr{vipA}, next: -1},
		}},
		{"owner changes again during a handover: wait for the latest one", []step{
			{now: 0, owners: map[netip.Addr]string{vipA: "me"}, open: true, want: []netip.Addr{vipA}, gained: []netip.Addr{vipA}, next: -1},
			{now: 100, owners: map[netip.Addr]string{vipA: "n2"}, open: true, want: []netip.Addr{vipA}, next: 2100},
			{now: 200, owners: map[netip.Addr]string{vipA: "n3"}, open: true, want: []netip.Addr{vipA}, next: 2200},
			{now: 300, notice: notice("n2"), owners: map[netip.Addr]string{vipA: "n3"}, open: true, want: []netip.Addr{vipA}, next: 2200},
			{now: 400, notice: notice("n3"), owners: map[netip.Addr]string{vipA: "n3"}, open: true, stopped: []netip.Addr{vipA}, next: -1},
		}},
		{"taken back during a handover: a gain again (clients may have moved)", []step{
			{now: 0, owners: map[netip.Addr]string{vipA: "me"}, open: true, want: []netip.Addr{vipA}, gained: []netip.Addr{vipA}, next: -1},
			{now: 100, owners: map[netip.Addr]string{vipA: "n2"}, open: true, want: []netip.Addr{vipA}, next: 2100},
			{now: 200, owners: map[netip.Addr]string{vipA: "me"}, open: true, want: []netip.Addr{vipA}, gained: []netip.Addr{vipA}, next: -1},
		}},
		{"Service gone during a handover: stop at once", []step{
			{now: 0, owners: map[netip.Addr]string{vipA: "me"}, open: true, want: []netip.Addr{vipA}, gained: []netip.Addr{vipA}, next: -1},
			{now: 100, owners: map[netip.Addr]string{vipA: "n2"}, open: true, want: []netip.Addr{vipA}, next: 2100},
			{now: 200, owners: map[netip.Addr]string{}, open: true, stopped: []netip.Addr{vipA}, next: -1},
		}},
		{"a stale notice does not end a later handover", []step{
			{now: 0, notice: notice("n2"), owners: map[netip.Addr]string{vipA: "me"}, open: true, want: []netip.Addr{vipA}, gained: []netip.Addr{vipA}, next: -1},
			{now: 5000, owners: map[netip.Addr]string{vipA: "n2"}, open: true, want: []netip.Addr{vipA}, next: 7000},
		}},
		{"not the owner: nothing to do", []step{
			{now: 0, owners: map[netip.Addr]string{vipA: "n2"}, open: true, next: -1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPlanner("me", timeout)
			for i, s := range tt.steps {
				if s.notice != nil {
					p.TookOver(vipA, s.notice.from, at(s.now))
				}
				plan := p.Evaluate(at(s.now), s.owners, s.open)
				wantNext := time.Time{}
				if s.next >= 0 {
					wantNext = at(s.next)
				}
				if !slices.Equal(plan.Announce, s.want) || !slices.Equal(plan.Gained, s.gained) ||
					!slices.Equal(plan.Stopped, s.stopped) || !plan.Next.Equal(wantNext) {
					t.Fatalf("step %d at %d ms: plan %+v (next %v), want announce %v gained %v stopped %v next %v",
						i, s.now, plan, plan.Next.Sub(at(0)), s.want, s.gained, s.stopped, wantNext.Sub(at(0)))
				}
				if p.Holds() != (len(plan.Announce) > 0) {
					t.Fatalf("step %d: Holds() = %v with %d announced", i, p.Holds(), len(plan.Announce))
				}
			}
		})
	}
}

func TestPlannerIgnoresOwnNotices(t *testing.T) {
	p := NewPlanner("me", time.Second)
	p.Evaluate(at(0), map[netip.Addr]string{vipA: "me"}, true)
	p.TookOver(vipA, "me", at(10))
	if plan := p.Evaluate(at(20), map[netip.Addr]string{vipA: "n2"}, true); len(plan.Stopped) != 0 {
		t.Fatalf("own notice ended the handover: %+v", plan)
	}
}
