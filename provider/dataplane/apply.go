package dataplane

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
	// batch folds the elements of one set or map into few "add element"
	// commands (see batchElements); see BatchElements for when it is safe.
	batch bool
	// applied is the Ruleset the kernel holds, as far as we know; nil after a
	// failure or before the first sync, which forces the next sync to be full.
	applied *Ruleset
	// reloader, when set, does full syncs that need no new chains, rules or
	// sets by rewriting elements over netlink.
	reloader ElementReloader
}

// ApplierOption tunes an Applier.
type ApplierOption func(*Applier)

// BatchElements folds a full sync's elements into few "add element"
// commands, which the nft binary parses about 40% faster. Use it only with
// the Interface from knftables.New, which sends transactions as text to
// nft: knftables.Fake and other implementations would take a folded
// command's key as one element.
func BatchElements() ApplierOption { return func(a *Applier) { a.batch = true } }

// ReloadElements makes full syncs rewrite only the elements, through r, when
// the kernel holds the chains, rules and sets they need as nft last wrote
// them (periodic resyncs and restarts, almost always), and load elements
// through r when there is no table yet. The elements are replaced in one
// atomic transaction, like a full sync through nft, at a fifth of the cost,
// and remembered ClientIP choices survive it. Otherwise, or if r fails, the
// full sync goes through nft as without this option. Partial syncs send
// their element changes through r as well, unless they delete chains.
func ReloadElements(r ElementReloader) ApplierOption {
	return func(a *Applier) { a.reloader = r }
}

// writer is the reloader if it can write chains, rules and sets too.
func (a *Applier) writer() SkeletonWriter {
	w, _ := a.reloader.(SkeletonWriter)
	return w
}

// NewApplier returns an Applier over nft, which must be bound to family inet
// and table TableName.
func NewApplier(nft knftables.Interface, opts ...ApplierOption) *Applier {
	a := &Applier{nft: nft}
	for _, opt := range opts {
		opt(a)
	}
	return a
}

// SyncResult tells what a sync did.
type SyncResult struct {
	Full bool
	// Reloaded: the full sync rewrote only elements, over netlink.
	Reloaded bool
	// Rewritten: the full sync rewrote the whole table over netlink.
	Rewritten  bool
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
	if !full && a.applied.stale && desired.base != a.applied {
		// A Builder has updated the applied Ruleset's elements since, and
		// desired does not say from what: we no longer know what it held.
		full = true
	}
	var newChains []string
	if !full {
		var ok bool
		newChains, ok = chainsOnlyChange(a.applied, desired)
		// New chains need the skeleton writer: nft cannot add a rule
		// naming an existing dnat map.
		full = !ok || len(newChains) > 0 && a.writer() == nil
	}
	if full && a.reloader != nil {
		if res, ok := a.reload(ctx, desired); ok {
			logger.V(2).Info("Synced nftables", "full", true, "reloaded", true, "operations", res.Operations, "elapsed", time.Since(start))
			return res, nil
		}
	}
	res := SyncResult{Full: full}
	tx := a.nft.NewTransaction()
	viaNetlink, skeletonChanged := false, false
	if full {
		res.Operations = fullTransaction(tx, desired, a.batch)
	} else {
		changes, deadChains := partialChanges(a.applied, desired)
		switch w := a.writer(); {
		case w != nil && len(newChains)+len(deadChains) > 0:
			viaNetlink, skeletonChanged = true, true
			res.Operations = len(changes) + len(newChains) + len(deadChains)
			err := w.ChangeSkeleton(ctx, desired, newChains, changes, deadChains)
			if errors.Is(err, ErrEncode) {
				logger.Info("Cannot encode the chains a partial sync adds; syncing in full", "err", err)
				return a.sync(ctx, desired, true)
			}
			if err != nil {
				a.applied = nil
				return res, fmt.Errorf("%w (full=false, %d operations): %w", ErrApply, res.Operations, err)
			}
		case a.reloader != nil && len(deadChains) == 0:
			viaNetlink = true
			res.Operations = len(changes)
			if err := a.changeOverNetlink(ctx, desired, changes); err != nil {
				a.applied = nil
				return res, fmt.Errorf("%w (full=false, %d operations): %w", ErrApply, res.Operations, err)
			}
		default:
			partialTransaction(tx, desired, changes, deadChains)
		}
	}
	res.Operations += tx.NumOperations()
	if tx.NumOperations() > 0 {
		if err := a.nft.Run(ctx, tx); err != nil {
			// We no longer know what the kernel holds: start over next time.
			a.applied = nil
			return res, fmt.Errorf("%w (full=%t, %d operations): %w", ErrApply, full, res.Operations, err)
		}
	}
	prev := a.applied
	a.applied = desired
	if (full || skeletonChanged) && a.reloader != nil {
		a.stamp(ctx, desired)
	}
	logger.V(2).Info("Synced nftables", "full", full, "netlink", viaNetlink, "operations", res.Operations, "elapsed", time.Since(start))
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
// forgotten at a full sync through nft (a reload keeps them); established
// connections keep their conntrack NAT and are not affected. With batch,
// elements are folded into few commands; it returns how many element operations were folded away, so that
// SyncResult.Operations counts elements either way.
func fullTransaction(tx *knftables.Transaction, desired *Ruleset, batch bool) (folded int) {
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: knftables.PtrTo(tableComment)})
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
		keys := sortedKeys(els)
		if !batch {
			for _, k := range keys {
				tx.Add(toKnft(desired, name, els[k]))
			}
			continue
		}
		for len(keys) > 0 {
			n := min(len(keys), elementBatch)
			tx.Add(batchElements(desired, name, els, keys[:n]))
			folded += n - 1
			keys = keys[n:]
		}
	}
	return folded
}

// elementBatch bounds the elements per "add element" command.
const elementBatch = 4096

// batchElements folds the elements of one container under keys into one
// knftables.Element: the others are written, in nft syntax, ahead of the
// last one's key, so that knftables renders
//
//	add element inet herald ep4 { k1 : v1, k2 comment "c" : v2, k3 : v3 }
//
// nft 1.0.6 parses and evaluates such a command markedly faster than one
// command per element (docs/benchmarks.md), and a full sync is mostly that.
// knftables has no batched element type of its own.
func batchElements(r *Ruleset, container string, els Elements, keys []string) *knftables.Element {
	var sb strings.Builder
	sb.Grow(len(keys) * 96) // an ep6 element with its separators is ~70 bytes
	for _, k := range keys[:len(keys)-1] {
		e := els[k]
		sb.WriteString(k)
		if e.Comment != "" {
			fmt.Fprintf(&sb, " comment %q", e.Comment)
		}
		if len(e.Value) > 0 {
			sb.WriteString(" : ")
			sb.WriteString(strings.Join(e.Value, " . "))
		}
		sb.WriteString(", ")
	}
	last := toKnft(r, container, els[keys[len(keys)-1]])
	last.Key = []string{sb.String() + strings.Join(last.Key, " . ")}
	return last
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
