package dataplane

import (
	"context"
	"net/netip"
	"os/exec"
	"slices"
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
// on full syncs, keeps remembered ClientIP choices through them, and
// rewrites the whole table over netlink when someone changed a rule of it.
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
		// never through nft: what is not reloaded is rewritten
		if res.Reloaded != wantReloaded || res.Rewritten == wantReloaded {
			t.Fatalf("%s: %+v, want reloaded=%t, else rewritten over netlink", s.name, res, wantReloaded)
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

// TestRealFirstSyncWritesTheTableOverNetlink: on a node without the table
// the first sync writes it, skeleton and elements, in one netlink batch;
// the result is the table nft alone would have written.
func TestRealFirstSyncWritesTheTableOverNetlink(t *testing.T) {
	nft := inNetns(t)
	ctx := context.Background()
	st := builderStates()
	s := st[len(st)-2] // pod CIDRs: an rbtree interval set too
	r := Build(s.svcs, s.slices, s.node, s.opts)
	res, err := NewApplier(nft, BatchElements(), ReloadElements(NewNetlinkReloader(threadNetns(t)))).Sync(ctx, r)
	if err != nil || !res.Full || !res.Rewritten {
		t.Fatalf("first sync: %+v, %v; want a full sync that rewrote the table over netlink", res, err)
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
// agent's Applier leaves the table nft alone writes for each state, but
// for the order of chains (nft lists them as created), and never runs nft.
// The new endpoint count and the new affinity timeout are partial syncs:
// they add (and later delete) chains in the batch of the elements, and a
// remembered ClientIP choice survives. New rules in existing chains (a
// new way of detecting pods) rewrite the table over netlink.
func TestRealPartialSyncsOverNetlink(t *testing.T) {
	nft := inNetns(t)
	ctx := context.Background()
	st := builderStates()
	want := make([]string, len(st))
	for i, s := range st {
		if _, err := NewApplier(nft, BatchElements()).SyncFull(ctx, Build(s.svcs, s.slices, s.node, s.opts)); err != nil {
			t.Fatalf("%s: nft: %v", s.name, err)
		}
		want[i] = chainsSorted(withoutNotes(listTable(t)))
	}
	if err := DeleteTable(ctx, nft); err != nil {
		t.Fatal(err)
	}
	a := NewApplier(nft, BatchElements(), ReloadElements(NewNetlinkReloader(threadNetns(t))))
	b := NewBuilder()
	remembered := "192.0.2.250 . 198.51.100.7 . tcp . 80"
	partial := 0
	for i, s := range st {
		res, err := a.Sync(ctx, buildObjects(b, s.svcs, s.slices, s.node, s.opts))
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		switch {
		case res.Full && !res.Rewritten:
			t.Errorf("%s: %+v: a full sync through nft", s.name, res)
		case res.Full && (s.name == "scale one to 70" || s.name == "affinity timeout"):
			t.Errorf("%s: full=%t, want a partial sync that adds chains", s.name, res.Full)
		case !res.Full:
			partial++
		}
		if got := chainsSorted(withoutNotes(listTable(t))); got != want[i] {
			t.Errorf("%s (%+v): table differs from nft's:\n%s", s.name, res, lineDiff(want[i], got))
		}
		switch s.name {
		case "start":
			// a client stuck to endpoint 192.0.2.71 of the "aff" Service
			addElement(t, "aff4", remembered+" : 192.0.2.71 . 8080")
		case "affinity timeout":
			if got := listTable(t); !strings.Contains(got, remembered) {
				t.Errorf("%s: a new affinity chain cost a remembered ClientIP choice:\n%s", s.name, got)
			}
		}
	}
	if partial < len(st)/2 {
		t.Errorf("only %d of %d syncs were partial: the test does not exercise netlink changes", partial, len(st))
	}
}

func addElement(t *testing.T, set, element string) {
	t.Helper()
	if out, err := exec.Command("nft", "add element inet herald "+set+" { "+element+" }").CombinedOutput(); err != nil {
		t.Fatalf("add %s element: %v: %s", set, err, out)
	}
}

// chainsSorted orders the chains of an nft listing by name: nft lists them
// in the order they were created.
func chainsSorted(table string) string {
	var out []string
	var chains [][]string
	at := -1
	var cur []string
	for _, l := range strings.Split(table, "\n") {
		switch {
		case strings.HasPrefix(l, "\tchain "):
			cur = []string{l}
			if at < 0 {
				at = len(out)
			}
		case cur != nil:
			cur = append(cur, l)
			if l == "\t}" {
				chains = append(chains, cur)
				cur = nil
			}
		default:
			out = append(out, l)
		}
	}
	if at < 0 {
		return table
	}
	slices.SortFunc(chains, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
	var sorted []string
	for _, c := range chains {
		sorted = append(sorted, c...)
	}
	return strings.Join(slices.Insert(out, at, sorted...), "\n")
}
