package dataplane

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

// fakeReloader stands in for the kernel's side of a reload: the skeleton
// fingerprint, which the test changes as someone editing rules would, the
// stamp kept in the table, and the Rulesets reloaded.
type fakeReloader struct {
	nft       *knftables.Fake // has the table once nft created it
	skeleton  string
	stamp     string
	reloaded  []*Ruleset
	reloadErr error
	changes   [][]ElementChange
	changeErr error
}

// Change applies the changes to the fake table, without it counting as an
// nft run.
func (f *fakeReloader) Change(ctx context.Context, r *Ruleset, changes []ElementChange) error {
	if f.changeErr != nil {
		return f.changeErr
	}
	f.changes = append(f.changes, changes)
	tx := f.nft.NewTransaction()
	partialTransaction(tx, r, changes, nil)
	return f.runUnseen(ctx, tx)
}

// runUnseen writes to the fake table as the kernel would hold it, leaving
// LastTransaction to tell whether the applier ran nft.
func (f *fakeReloader) runUnseen(ctx context.Context, tx *knftables.Transaction) error {
	last := f.nft.LastTransaction
	defer func() { f.nft.LastTransaction = last }()
	return f.nft.Run(ctx, tx)
}

func (f *fakeReloader) Fingerprint(context.Context) ([]byte, error) { return []byte(f.skeleton), nil }

// Reload writes the elements into the fake table, as the kernel would hold
// them, without it counting as an nft run.
func (f *fakeReloader) Reload(ctx context.Context, r *Ruleset) error {
	if f.reloadErr != nil {
		return f.reloadErr
	}
	f.reloaded = append(f.reloaded, r)
	tx := f.nft.NewTransaction()
	for _, name := range containerNames(r) {
		if name == stampSet || r.Maps[name] != nil && r.Maps[name].Timeout != nil {
			continue
		}
		if r.Sets[name] != nil {
			tx.Flush(&knftables.Set{Name: name})
		} else {
			tx.Flush(&knftables.Map{Name: name})
		}
		for _, e := range r.Elements[name] {
			tx.Add(toKnft(r, name, e))
		}
	}
	return f.runUnseen(ctx, tx)
}

func (f *fakeReloader) Stamp(context.Context) (string, error) {
	if f.nft.Table == nil {
		return "", ErrNoTable
	}
	return f.stamp, nil
}

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

// How a full sync went: through nft alone, by reload alone, or creating
// the table (nft writes the skeleton, then a reload).
type syncPath int

const (
	viaNFT syncPath = iota
	viaReload
	viaCreate
)

func (s *fullSyncs) step(name string, r *Ruleset, want syncPath) {
	s.t.Helper()
	before, reloads := s.nft.LastTransaction, len(s.rl.reloaded)
	res, err := s.a.SyncFull(context.Background(), r)
	if err != nil {
		s.t.Fatalf("%s: %v", name, err)
	}
	if !res.Full || res.Reloaded != (want != viaNFT) {
		s.t.Fatalf("%s: got %+v, want full with reloaded=%t", name, res, want != viaNFT)
	}
	if ranNFT := s.nft.LastTransaction != before; ranNFT != (want != viaReload) {
		s.t.Fatalf("%s: nft ran=%t, want %t", name, ranNFT, want != viaReload)
	}
	reloaded := len(s.rl.reloaded) > reloads
	if reloaded != (want != viaNFT) || (reloaded && s.rl.reloaded[len(s.rl.reloaded)-1] != r) {
		s.t.Fatalf("%s: reloaded=%t (%d Rulesets), want desired reloaded=%t", name, reloaded, len(s.rl.reloaded)-reloads, want != viaNFT)
	}
	if want == viaCreate && strings.Contains(s.nft.LastTransaction.String(), "add element") {
		s.t.Fatalf("%s: creating the table, nft wrote elements:\n%s", name, s.nft.LastTransaction)
	}
}

func newFullSyncs(t *testing.T) *fullSyncs {
	nft := knftables.NewFake(TableFamily, TableName)
	rl := &fakeReloader{nft: nft, skeleton: "v1"}
	return &fullSyncs{t: t, a: NewApplier(nft, ReloadElements(rl)), nft: nft, rl: rl}
}

func TestFullSyncReloadsElementsWhenOnlyElementsChanged(t *testing.T) {
	s := newFullSyncs(t)
	s.step("no table: nft writes the skeleton, then a reload", webWith(2), viaCreate)
	s.step("endpoint added: elements only", webWith(3), viaReload)
	s.step("same again", webWith(3), viaReload)
	s.rl.skeleton = "v2"
	s.step("someone changed a rule: nft rewrites the table", webWith(3), viaNFT)
	s.step("and stamps the new skeleton", webWith(2), viaReload)
	s.step("70 endpoints need a new pick chain", webWith(70), viaNFT)
	s.step("back to fewer endpoints: the extra pick chain must go", webWith(2), viaNFT)
	s.rl.reloadErr = errors.New("netlink: no buffer space")
	s.step("a failed reload falls back to nft", webWith(2), viaNFT)
}

func TestCreatingTheTableFallsBackToNFTWhenTheReloadFails(t *testing.T) {
	s := newFullSyncs(t)
	s.rl.reloadErr = errors.New("netlink: no buffer space")
	s.step("the skeleton is written, the reload fails", webWith(2), viaNFT)
	if got := elementLines(s.nft.Dump()); len(got) == 0 {
		t.Fatal("nft did not write the elements after the failed reload")
	}
}

func TestRestartedApplierReloadsAStampedTable(t *testing.T) {
	s := newFullSyncs(t)
	s.step("first agent", webWith(2), viaCreate)
	// a new process: nothing in memory, the stamp in the kernel
	s.a = NewApplier(s.nft, ReloadElements(s.rl))
	s.step("restarted agent, same skeleton", webWith(3), viaReload)
	s.a = NewApplier(s.nft, ReloadElements(s.rl))
	s.step("restarted agent that needs another skeleton", webWith(70), viaNFT)
	s.rl.stamp = "garbage"
	s.a = NewApplier(s.nft, ReloadElements(s.rl))
	s.step("a stamp that does not parse", webWith(70), viaNFT)
}

func TestPartialSyncsKeepTheStampValid(t *testing.T) {
	s := newFullSyncs(t)
	syncOK(t, s.a, webWith(1))
	if res := syncOK(t, s.a, webWith(2)); res.Full {
		t.Fatalf("want a partial sync, got %+v", res)
	}
	s.step("full sync after a partial one", webWith(3), viaReload)
}

// A failed transaction changed nothing (nft transactions and netlink
// batches are atomic), so the stamp still tells the truth and the next full
// sync may reload.
func TestFullSyncAfterAFailureMayReload(t *testing.T) {
	ctx := context.Background()
	s := newFullSyncs(t)
	s.step("start", webWith(1), viaCreate)
	s.rl.changeErr = errors.New("netlink: interrupted")
	if _, err := s.a.Sync(ctx, webWith(2)); err == nil {
		t.Fatal("want the partial sync to fail")
	}
	s.rl.changeErr = nil
	res, err := s.a.Sync(ctx, webWith(2))
	if err != nil || !res.Full || !res.Reloaded {
		t.Fatalf("after a failure: %+v, %v; want a full sync by reload", res, err)
	}
}

func TestPartialSyncsGoOverNetlinkUnlessChainsGo(t *testing.T) {
	ctx := context.Background()
	s := newFullSyncs(t)
	s.step("start", webWith(2), viaCreate)
	before := s.nft.LastTransaction
	res := syncOK(t, s.a, webWith(3))
	if res.Full || res.Operations == 0 || len(s.rl.changes) != 1 || s.nft.LastTransaction != before {
		t.Fatalf("endpoint added: %+v, %d netlink changes, nft ran=%t; want a partial sync over netlink only",
			res, len(s.rl.changes), s.nft.LastTransaction != before)
	}
	want := elementLines(s.nft.Dump())

	s.step("grow to 70 endpoints: a new chain, through nft", webWith(70), viaNFT)
	res = syncOK(t, s.a, webWith(3))
	if res.Full || len(s.rl.changes) != 1 || !strings.Contains(s.nft.LastTransaction.String(), "delete chain") {
		t.Fatalf("back to 3 endpoints: %+v; want a partial sync through nft that deletes the 70-endpoint chain", res)
	}
	if got := elementLines(s.nft.Dump()); !slices.Equal(got, want) {
		t.Errorf("elements after the round trip:\n got %q\nwant %q", got, want)
	}

	s.rl.changeErr = errors.New("netlink: interrupted")
	if _, err := s.a.Sync(ctx, webWith(4)); !errors.Is(err, ErrApply) {
		t.Fatalf("failed netlink change: got %v, want ErrApply", err)
	}
	s.rl.changeErr = nil
	if res := syncOK(t, s.a, webWith(4)); !res.Full {
		t.Fatalf("after a failed change: %+v, want a full sync", res)
	}
}
