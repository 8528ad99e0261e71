package dataplane

import (
	"context"
	"errors"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

// fakeReloader stands in for the kernel's side of a reload: the skeleton
// fingerprint, which the test changes as someone editing rules would, the
// stamp kept in the table, and the Rulesets reloaded.
type fakeReloader struct {
	skeleton  string
	stamp     string
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

func (f *fakeReloader) Stamp(context.Context) (string, error) { return f.stamp, nil }

func (f *fakeReloader) SetStamp(_ context.Context, note string) error {
	f.stamp = note
	return nil
}

func webWith(n int) *Ruleset {
	var eps []ep
	for i := range n {
		eps = append(eps, ep{ip4(192, 0, 2, 101+i), otherNode, ready})
	}
	return Build([]*v1.Service{webService()}, []*discoveryv1.EndpointSlice{webSlice(eps...)}, testNode, Options{})
}

// fullSyncs runs full syncs through a and checks which way each went.
type fullSyncs struct {
	t   *testing.T
	a   *Applier
	nft *knftables.Fake
	rl  *fakeReloader
}

func (s *fullSyncs) step(name string, r *Ruleset, wantReloaded bool) {
	s.t.Helper()
	before := s.nft.LastTransaction
	res, err := s.a.SyncFull(context.Background(), r)
	if err != nil {
		s.t.Fatalf("%s: %v", name, err)
	}
	if !res.Full || res.Reloaded != wantReloaded {
		s.t.Fatalf("%s: got %+v, want full with reloaded=%t", name, res, wantReloaded)
	}
	if ranNFT := s.nft.LastTransaction != before; ranNFT == wantReloaded {
		s.t.Fatalf("%s: nft ran=%t, want %t", name, ranNFT, !wantReloaded)
	}
	if wantReloaded && s.rl.reloaded[len(s.rl.reloaded)-1] != r {
		s.t.Fatalf("%s: reloaded another Ruleset", name)
	}
}

func newFullSyncs(t *testing.T) *fullSyncs {
	nft := knftables.NewFake(TableFamily, TableName)
	rl := &fakeReloader{skeleton: "v1"}
	return &fullSyncs{t: t, a: NewApplier(nft, ReloadElements(rl)), nft: nft, rl: rl}
}

func TestFullSyncReloadsElementsWhenOnlyElementsChanged(t *testing.T) {
	s := newFullSyncs(t)
	s.step("no stamp yet: nft writes everything", webWith(2), false)
	s.step("endpoint added: elements only", webWith(3), true)
	s.step("same again", webWith(3), true)
	s.rl.skeleton = "v2"
	s.step("someone changed a rule: nft rewrites the table", webWith(3), false)
	s.step("and stamps the new skeleton", webWith(2), true)
	s.step("20 endpoints need a new pick chain", webWith(20), false)
	s.step("back to fewer endpoints: the extra pick chain must go", webWith(2), false)
	s.rl.reloadErr = errors.New("netlink: no buffer space")
	s.step("a failed reload falls back to nft", webWith(2), false)
}

func TestRestartedApplierReloadsAStampedTable(t *testing.T) {
	s := newFullSyncs(t)
	s.step("first agent", webWith(2), false)
	// a new process: nothing in memory, the stamp in the kernel
	s.a = NewApplier(s.nft, ReloadElements(s.rl))
	s.step("restarted agent, same skeleton", webWith(3), true)
	s.a = NewApplier(s.nft, ReloadElements(s.rl))
	s.step("restarted agent that needs another skeleton", webWith(20), false)
	s.rl.stamp = "garbage"
	s.a = NewApplier(s.nft, ReloadElements(s.rl))
	s.step("a stamp that does not parse", webWith(20), false)
}

func TestPartialSyncsKeepTheStampValid(t *testing.T) {
	s := newFullSyncs(t)
	syncOK(t, s.a, webWith(1))
	if res := syncOK(t, s.a, webWith(2)); res.Full {
		t.Fatalf("want a partial sync, got %+v", res)
	}
	s.step("full sync after a partial one", webWith(3), true)
}

// A failed nft transaction changed nothing (nft transactions are atomic),
// so the stamp still tells the truth and the next full sync may reload.
func TestFullSyncAfterAFailureMayReload(t *testing.T) {
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
	res, err := a.Sync(ctx, webWith(2))
	if err != nil || !res.Full || !res.Reloaded {
		t.Fatalf("after a failure: %+v, %v; want a full sync by reload", res, err)
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
