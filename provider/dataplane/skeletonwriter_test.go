package dataplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"sigs.k8s.io/knftables"
)

// fakeWriter is a fakeReloader that writes skeletons too, into the same
// fake table and without it counting as an nft run.
type fakeWriter struct {
	*fakeReloader
	rewrites   int
	rewriteErr error
	grown      [][]string // newChains of each ChangeSkeleton, then "-" and deadChains
	growErr    error
}

func (f *fakeWriter) Rewrite(ctx context.Context, r *Ruleset) error {
	if f.rewriteErr != nil {
		return f.rewriteErr
	}
	f.rewrites++
	tx := f.nft.NewTransaction()
	fullTransaction(tx, r, false)
	return f.runUnseen(ctx, tx)
}

func (f *fakeWriter) ChangeSkeleton(ctx context.Context, r *Ruleset, newChains []string, changes []ElementChange, deadChains []string) error {
	if f.growErr != nil {
		return f.growErr
	}
	f.grown = append(f.grown, append(append(slices.Clone(newChains), "-"), deadChains...))
	tx := f.nft.NewTransaction()
	for _, name := range newChains {
		c := r.Chains[name].Chain
		tx.Add(&c)
		addRules(tx, r.Chains[name])
	}
	partialTransaction(tx, r, changes, deadChains)
	return f.runUnseen(ctx, tx)
}

// TestSkeletonWriterKeepsNftOut: with a SkeletonWriter no sync runs nft:
// the first one and a tampered table's are rewrites, a new pick chain is a
// partial sync that adds it and the way back one that deletes it; nft is
// the fallback when the writer cannot encode or fails.
func TestSkeletonWriterKeepsNftOut(t *testing.T) {
	ctx := context.Background()
	nft := knftables.NewFake(TableFamily, TableName)
	w := &fakeWriter{fakeReloader: &fakeReloader{nft: nft, skeleton: "v1"}}
	a := NewApplier(nft, ReloadElements(w))
	sync := func(name string, full bool, r *Ruleset, want func(SyncResult) bool) {
		t.Helper()
		before := nft.LastTransaction
		syncFn := a.Sync
		if full {
			syncFn = a.SyncFull
		}
		res, err := syncFn(ctx, r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !want(res) || nft.LastTransaction != before {
			t.Fatalf("%s: %+v, nft ran=%t", name, res, nft.LastTransaction != before)
		}
	}
	rewritten := func(res SyncResult) bool { return res.Full && res.Rewritten }
	partial := func(res SyncResult) bool { return !res.Full }

	sync("no table", false, webWith(2), rewritten)
	sync("resync", true, webWith(2), func(res SyncResult) bool { return res.Reloaded })
	w.skeleton = "v2" // someone changed a rule
	sync("tampered", true, webWith(2), rewritten)
	sync("70 endpoints", false, webWith(70), partial)
	sync("back to 3", false, webWith(3), partial)
	if got, want := fmt.Sprint(w.grown), "[[pick4-70 -] [- pick4-70]]"; got != want {
		t.Errorf("chains added and deleted: %s, want %s", got, want)
	}
	sync("resync after the chains came and went: the stamp holds", true, webWith(3),
		func(res SyncResult) bool { return res.Reloaded })
	if w.rewrites != 2 {
		t.Errorf("%d rewrites, want 2", w.rewrites)
	}
	if got, want := elementLines(nft.Dump()), elementLines(dumpOf(t, webWith(3))); !slices.Equal(got, want) {
		t.Errorf("elements:\n got %q\nwant %q", got, want)
	}

	w.growErr = fmt.Errorf("%w: something new", ErrEncode)
	sync("a chain the writer cannot encode: a full sync instead", false, webWith(70), rewritten)
	w.growErr, w.rewriteErr = nil, errors.New("netlink: interrupted")
	before := nft.LastTransaction
	if res, err := a.SyncFull(ctx, webWith(71)); err != nil || !res.Full || res.Rewritten || nft.LastTransaction == before {
		t.Fatalf("a failed rewrite: %+v, %v; want a full sync through nft", res, err)
	}
}

// dumpOf is the fake table nft alone writes for r.
func dumpOf(t *testing.T, r *Ruleset) string {
	t.Helper()
	nft := knftables.NewFake(TableFamily, TableName)
	if _, err := NewApplier(nft).SyncFull(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return nft.Dump()
}
