package dataplane

import (
	"context"
	"testing"
)

// TestRealBatchedFullSyncMatchesPerElement: the kernel holds the same table
// whether a full sync's elements are batched or written one per command,
// over states with source-range intervals, affinity, comments and both
// families.
func TestRealBatchedFullSyncMatchesPerElement(t *testing.T) {
	nft := inNetns(t)
	ctx := context.Background()
	st := builderStates()
	// the start (source ranges, affinity, Local policies, a shared
	// frontend) and the last state with Services, which has pod CIDRs
	for _, s := range []buildState{st[0], st[len(st)-2]} {
		r := Build(s.svcs, s.slices, s.node, s.opts)
		batched := NewApplier(nft, BatchElements())
		if _, err := batched.SyncFull(ctx, r); err != nil {
			t.Fatalf("%s: batched: %v", s.name, err)
		}
		got := listTable(t)
		if _, err := (&Applier{nft: nft}).SyncFull(ctx, r); err != nil {
			t.Fatalf("%s: one element per command: %v", s.name, err)
		}
		if want := listTable(t); got != want {
			t.Errorf("%s: batched table differs:\n got %s\nwant %s", s.name, got, want)
		}
	}
}
