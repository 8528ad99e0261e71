package dataplane

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
)

// These tests check the netlink reloader against the kernel: whatever
// herald writes over netlink, nft must read back as the table nft alone
// would have written.

// TestRealReloadWritesWhatNftWrites: elements written over netlink read back
// through nft exactly as the same elements written as nft text, for states
// with every kind of container: verdict maps with comments, endpoint maps,
// both families, rbtree (pod CIDRs) and concatenated (source ranges)
// intervals, and enough elements to need several netlink messages.
func TestRealReloadWritesWhatNftWrites(t *testing.T) {
	nft := inNetns(t)
	reloader := NewNetlinkReloader(threadNetns(t))
	ctx := context.Background()
	st := builderStates()
	big, bigSl := scaleCluster(400)
	wide := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("2001:db8::/32")}
	for _, s := range []buildState{
		st[0],
		st[len(st)-2],
		{name: "400 Services", svcs: big, slices: bigSl, node: testNode, opts: Options{Local: LocalDetector{PodCIDRs: wide}}},
	} {
		r := Build(s.svcs, s.slices, s.node, s.opts)
		if _, err := NewApplier(nft, BatchElements()).SyncFull(ctx, r); err != nil {
			t.Fatalf("%s: nft: %v", s.name, err)
		}
		want := listTable(t)

		empty := *r
		empty.Elements = map[string]Elements{}
		if err := reloader.Reload(ctx, &empty); err != nil {
			t.Fatalf("%s: reload without elements: %v", s.name, err)
		}
		if got := listTable(t); strings.Contains(got, "elements =") {
			t.Fatalf("%s: reload did not flush:\n%s", s.name, got)
		}
		if err := reloader.Reload(ctx, r); err != nil {
			t.Fatalf("%s: reload: %v", s.name, err)
		}
		if got := listTable(t); got != want {
			t.Errorf("%s: the table differs after a netlink reload:\n%s", s.name, lineDiff(want, got))
		}
	}
}

// TestRealApplierReloadsUntilTampered: the agent's Applier reloads elements
// on full syncs, keeps remembered ClientIP choices through them, and goes
// back to nft when someone changed a rule of the table.
func TestRealApplierReloadsUntilTampered(t *testing.T) {
	nft := inNetns(t)
	ctx := context.Background()
	a := NewApplier(nft, BatchElements(), ReloadElements(NewNetlinkReloader(threadNetns(t))))
	st := builderStates()
	start, scaled := st[0], st[3] // "scale one to 4": elements only
	want := func(s buildState) string {
		t.Helper()
		if _, err := NewApplier(nft, BatchElements()).SyncFull(ctx, Build(s.svcs, s.slices, s.node, s.opts)); err != nil {
			t.Fatal(err)
		}
		return listTable(t)
	}
	wantScaled := want(scaled)
	full := func(s buildState, wantReloaded bool) {
		t.Helper()
		res, err := a.SyncFull(ctx, Build(s.svcs, s.slices, s.node, s.opts))
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if res.Reloaded != wantReloaded {
			t.Fatalf("%s: reloaded=%t, want %t", s.name, res.Reloaded, wantReloaded)
		}
	}
	full(start, false)
	// a client stuck to endpoint 192.0.2.71 of the "aff" Service
	remembered := "192.0.2.250 . 198.51.100.7 . tcp . 80"
	if out, err := exec.Command("nft", "add element inet herald aff4 { "+remembered+" : 192.0.2.71 . 8080 }").CombinedOutput(); err != nil {
		t.Fatalf("add affinity entry: %v: %s", err, out)
	}
	full(scaled, true)
	got := listTable(t)
	if !strings.Contains(got, remembered) {
		t.Errorf("a reload forgot a remembered ClientIP choice:\n%s", got)
	}
	if withoutNotes(got) != withoutNotes(wantScaled) {
		t.Errorf("reloaded table differs from nft's:\n%s", lineDiff(withoutNotes(wantScaled), withoutNotes(got)))
	}

	if out, err := exec.Command("nft", "add rule inet herald services counter accept").CombinedOutput(); err != nil {
		t.Fatalf("tamper: %v: %s", err, out)
	}
	full(scaled, false)
	if got := listTable(t); withoutNotes(got) != withoutNotes(wantScaled) {
		t.Errorf("the table was not repaired:\n%s", lineDiff(withoutNotes(wantScaled), withoutNotes(got)))
	}
	full(start, true)

	// A restarted agent knows nothing but finds the stamp.
	a = NewApplier(nft, BatchElements(), ReloadElements(NewNetlinkReloader(threadNetns(t))))
	full(scaled, true)
	if got := listTable(t); withoutNotes(got) != withoutNotes(wantScaled) {
		t.Errorf("a restarted agent's reload differs from nft's:\n%s", lineDiff(withoutNotes(wantScaled), withoutNotes(got)))
	}
}

// TestRealFirstSyncCreatesTheTableThenReloads: on a node without the table
// nft writes only the skeleton and the elements go over netlink; the result
// is the table nft alone would have written.
func TestRealFirstSyncCreatesTheTableThenReloads(t *testing.T) {
	nft := inNetns(t)
	ctx := context.Background()
	st := builderStates()
	s := st[len(st)-2] // pod CIDRs: an rbtree interval set too
	r := Build(s.svcs, s.slices, s.node, s.opts)
	res, err := NewApplier(nft, BatchElements(), ReloadElements(NewNetlinkReloader(threadNetns(t)))).Sync(ctx, r)
	if err != nil || !res.Full || !res.Reloaded {
		t.Fatalf("first sync: %+v, %v; want a full sync that reloaded", res, err)
	}
	got := listTable(t)
	if _, err := NewApplier(nft, BatchElements()).SyncFull(ctx, r); err != nil {
		t.Fatal(err)
	}
	if want := listTable(t); withoutNotes(got) != withoutNotes(want) {
		t.Errorf("created table differs from nft's:\n%s", lineDiff(withoutNotes(want), withoutNotes(got)))
	}
}

// TestRealPartialSyncsOverNetlink: walking the builder's states with the
// agent's Applier (partial syncs over netlink where no chain goes) leaves
// the kernel table nft alone writes for each state.
func TestRealPartialSyncsOverNetlink(t *testing.T) {
	nft := inNetns(t)
	ctx := context.Background()
	st := builderStates()
	want := make([]string, len(st))
	for i, s := range st {
		if _, err := NewApplier(nft, BatchElements()).SyncFull(ctx, Build(s.svcs, s.slices, s.node, s.opts)); err != nil {
			t.Fatalf("%s: nft: %v", s.name, err)
		}
		want[i] = withoutNotes(listTable(t))
	}
	if err := DeleteTable(ctx, nft); err != nil {
		t.Fatal(err)
	}
	a := NewApplier(nft, BatchElements(), ReloadElements(NewNetlinkReloader(threadNetns(t))))
	b := NewBuilder()
	partial := 0
	for i, s := range st {
		res, err := a.Sync(ctx, b.Build(s.svcs, s.slices, s.node, s.opts))
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !res.Full {
			partial++
		}
		if got := withoutNotes(listTable(t)); got != want[i] {
			t.Errorf("%s (%+v): table differs from nft's:\n%s", s.name, res, lineDiff(want[i], got))
		}
	}
	if partial < len(st)/2 {
		t.Errorf("only %d of %d syncs were partial: the test does not exercise netlink changes", partial, len(st))
	}
}
