package dataplane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/klog/v2"
	"sigs.k8s.io/knftables"
)

// ErrApply wraps every failure to run an nftables transaction.
var ErrApply = errors.New("apply nftables transaction")

// Applier writes Rulesets to the herald table through knftables. It remembers
// what it last applied, so that most syncs send only the element changes.
// An Applier is not safe for concurrent use; the agent syncs from one goroutine.
type Applier struct {
	nft knftables.Interface
	// applied is the Ruleset the kernel holds, as far as we know; nil after a
	// failure or before the first sync, which forces the next sync to be full.
	applied *Ruleset
}

// NewApplier returns an Applier over nft, which must be bound to family inet
// and table TableName.
func NewApplier(nft knftables.Interface) *Applier {
	return &Applier{nft: nft}
}

// SyncResult tells what a sync did.
type SyncResult struct {
	Full       bool
	Operations int
}

// Sync makes the table match desired: a full sync the first time and after any
// failure, else a partial sync with only what changed since the last one.
func (a *Applier) Sync(ctx context.Context, desired *Ruleset) (SyncResult, error) {
	return a.sync(ctx, desired, a.applied == nil)
}

// SyncFull rewrites the whole table regardless of what was applied before (for
// a periodic resync that repairs changes made behind herald's back).
func (a *Applier) SyncFull(ctx context.Context, desired *Ruleset) (SyncResult, error) {
	return a.sync(ctx, desired, true)
}

func (a *Applier) sync(ctx context.Context, desired *Ruleset, full bool) (SyncResult, error) {
	logger := klog.FromContext(ctx)
	start := time.Now()
	if !full && !partialPossible(a.applied, desired) {
		full = true
	}
	res := SyncResult{Full: full}
	tx := a.nft.NewTransaction()
	if full {
		fullTransaction(tx, desired)
	} else {
		partialTransaction(tx, a.applied, desired)
	}
	res.Operations = tx.NumOperations()
	if res.Operations > 0 {
		if err := a.nft.Run(ctx, tx); err != nil {
			// We no longer know what the kernel holds: start over next time.
			a.applied = nil
			return res, fmt.Errorf("%w (full=%t, %d operations): %w", ErrApply, full, res.Operations, err)
		}
	}
	prev := a.applied
	a.applied = desired
	logger.V(2).Info("Synced nftables", "full", full, "operations", res.Operations, "elapsed", time.Since(start))
	if !full && affinityShrank(prev, desired) {
		a.purgeAffinity(ctx, desired)
	}
	return res, nil
}

// fullTransaction replaces the table in one atomic transaction: it deletes
// the table (whatever an older herald or anyone else left in it) and writes
// it anew. Recreating rather than flushing is forced by nft 1.0.6, which can
// add a rule naming a dnat map only in the transaction that creates the map
// (see addFamilyContainers). The price: remembered ClientIP choices are
// forgotten at a full sync; established connections keep their conntrack
// NAT and are not affected.
func fullTransaction(tx *knftables.Transaction, desired *Ruleset) {
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("herald service load balancing")})
	for _, name := range sortedKeys(desired.Chains) {
		c := desired.Chains[name].Chain
		tx.Add(&c)
	}
	for _, name := range sortedKeys(desired.Sets) {
		tx.Add(desired.Sets[name])
	}
	for _, name := range sortedKeys(desired.Maps) {
		tx.Add(desired.Maps[name])
	}
	for _, name := range sortedKeys(desired.Chains) {
		addRules(tx, desired.Chains[name])
	}
	for _, name := range sortedKeys(desired.Elements) {
		els := desired.Elements[name]
		for _, k := range sortedKeys(els) {
			tx.Add(toKnft(desired, name, els[k]))
		}
	}
}

func addRules(tx *knftables.Transaction, c *Chain) {
	for _, rule := range c.Rules {
		tx.Add(&knftables.Rule{Chain: c.Name, Rule: rule})
	}
}

func toKnft(r *Ruleset, container string, e Element) *knftables.Element {
	el := &knftables.Element{Key: e.Key, Value: e.Value}
	if e.Comment != "" {
		el.Comment = knftables.PtrTo(e.Comment)
	}
	if r.Sets[container] != nil {
		el.Set = container
	} else {
		el.Map = container
	}
	return el
}
