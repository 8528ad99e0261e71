package dataplane

import (
	"context"
	"errors"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

// fakeReloader stands in for the kernel's view of the table: a skeleton
// fingerprint the test can change (as someone editing rules would), and the
// Rulesets reloaded.
type fakeReloader struct {
	skeleton  string
	reloaded  []*Ruleset
	reloadErr error
}

func (f *fakeReloader) Fingerprint(context.Context) ([]byte, error) { return []byte(f.skeleton), nil }

func (f *fakeReloader) Reload(_ context.Context, r *Ruleset) error {
	if f.reloadErr != nil {
		return f.reloadErr
	}
	f.reloaded = append(f.reloaded, r)
	return nil
}

func webWith(n int) *Ruleset {
	var eps []ep
	for i := range n {
		eps = append(eps, ep{ip4(192, 0, 2, 101+i), otherNode, ready})
	}
	return Build([]*v1.Service{webService()}, []*discoveryv1.EndpointSlice{webSlice(eps...)}, testNode, Options{})
}

func TestFullSyncReloadsElementsWhenOnlyElementsChanged(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(TableFamily, TableName)
	rl := &fakeReloader{skeleton: "v1"}
	a := NewApplier(fake, ReloadElements(rl))

	step := func(name string, r *Ruleset, wantReloaded bool) {
		t.Helper()
		before := fake.LastTransaction
		res, err := a.SyncFull(ctx, r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !res.Full || res.Reloaded != wantReloaded {
			t.Fatalf("%s: got %+v, want full with reloaded=%t", name, res, wantReloaded)
		}
		ranNFT := fake.LastTransaction != before
		if ranNFT == wantReloaded {
			t.Fatalf("%s: nft ran=%t, want %t", name, ranNFT, !wantReloaded)
		}
		if wantReloaded && rl.reloaded[len(rl.reloaded)-1] != r {
			t.Fatalf("%s: reloaded another Ruleset", name)
		}
	}
	step("first sync writes everything through nft", webWith(2), false)
	step("endpoint added: elements only", webWith(3), true)
	step("same again", webWith(3), true)
	rl.skeleton = "v2"
	step("someone changed a rule: nft rewrites the table", webWith(3), false)
	step("and records the new skeleton", webWith(2), true)
	step("20 endpoints need a new pick chain", webWith(20), false)
	rl.reloadErr = errors.New("netlink: no buffer space")
	step("a failed reload falls back to nft", webWith(2), false)
}

func TestPartialSyncsKeepTheSkeletonFingerprint(t *testing.T) {
	ctx := context.Background()
	rl := &fakeReloader{skeleton: "v1"}
	a := NewApplier(knftables.NewFake(TableFamily, TableName), ReloadElements(rl))
	syncOK(t, a, webWith(1))
	if res := syncOK(t, a, webWith(2)); res.Full {
		t.Fatalf("want a partial sync, got %+v", res)
	}
	res, err := a.SyncFull(ctx, webWith(3))
	if err != nil || !res.Reloaded {
		t.Fatalf("full sync after a partial one: %+v, %v; want a reload", res, err)
	}
}

func TestFailedNFTSyncForgetsTheSkeleton(t *testing.T) {
	ctx := context.Background()
	rl := &fakeReloader{skeleton: "v1"}
	fail := &failingNFT{Interface: knftables.NewFake(TableFamily, TableName)}
	a := NewApplier(fail, ReloadElements(rl))
	syncOK(t, a, webWith(1))
	fail.fail = true
	if _, err := a.Sync(ctx, webWith(2)); err == nil {
		t.Fatal("want the partial sync to fail")
	}
	fail.fail = false
	res, err := a.SyncFull(ctx, webWith(2))
	if err != nil || res.Reloaded {
		t.Fatalf("after a failure: %+v, %v; want a full sync through nft", res, err)
	}
}

type failingNFT struct {
	knftables.Interface
	fail bool
}

func (f *failingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	if f.fail {
		return errors.New("nft: injected failure")
	}
	return f.Interface.Run(ctx, tx)
}
