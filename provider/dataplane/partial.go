package dataplane

import (
	"context"
	"maps"
	"reflect"
	"slices"

	"k8s.io/klog/v2"
	"sigs.k8s.io/knftables"
)

// partialTransaction sends only what changed between applied and desired.
// Since herald has no per-service chains, a Service or endpoint change is a
// handful of element deletes and adds, whatever the number of Services. If a
// set or map definition changed, the caller must sync in full instead.
func partialTransaction(tx *knftables.Transaction, applied, desired *Ruleset) *knftables.Transaction {
	// 1. containers and chains first: new elements and rules may name them.
	for _, name := range sortedKeys(desired.Sets) {
		if applied.Sets[name] == nil {
			tx.Add(desired.Sets[name])
		}
	}
	for _, name := range sortedKeys(desired.Maps) {
		if applied.Maps[name] == nil {
			tx.Add(desired.Maps[name])
		}
	}
	for _, name := range sortedKeys(desired.Chains) {
		c, old := desired.Chains[name], applied.Chains[name]
		if old != nil && slices.Equal(old.Rules, c.Rules) {
			continue
		}
		ch := c.Chain
		tx.Add(&ch)
		tx.Flush(&knftables.Chain{Name: name})
		addRules(tx, c)
	}
	// 2. elements: delete what went or changed, then add what came or changed.
	// A changed map value is deleted and re-added: the kernel will not
	// overwrite an element's value with "add".
	for _, name := range sortedKeys(applied.Elements) {
		if !desired.has(name) {
			continue
		}
		want, had := desired.Elements[name], applied.Elements[name]
		for _, k := range sortedKeys(had) {
			e := had[k]
			if d, ok := want[k]; !ok || !d.same(e) {
				tx.Delete(&knftables.Element{Set: setName(applied, name), Map: mapName(applied, name), Key: e.Key})
			}
		}
	}
	for _, name := range sortedKeys(desired.Elements) {
		had, want := applied.Elements[name], desired.Elements[name]
		for _, k := range sortedKeys(want) {
			e := want[k]
			if old, ok := had[k]; !ok || !old.same(e) {
				tx.Add(toKnft(desired, name, e))
			}
		}
	}
	// 3. what is gone, last, once nothing names it any more.
	for _, name := range sortedKeys(applied.Chains) {
		if desired.Chains[name] == nil {
			tx.Flush(&knftables.Chain{Name: name})
			tx.Delete(&knftables.Chain{Name: name})
		}
	}
	for _, name := range sortedKeys(applied.Sets) {
		if desired.Sets[name] == nil {
			tx.Delete(&knftables.Set{Name: name})
		}
	}
	for _, name := range sortedKeys(applied.Maps) {
		if desired.Maps[name] == nil {
			tx.Delete(&knftables.Map{Name: name})
		}
	}
	return tx
}

func (r *Ruleset) has(container string) bool {
	return r.Sets[container] != nil || r.Maps[container] != nil
}

func setName(r *Ruleset, c string) string { return pick(r.Sets[c] != nil, c, "") }
func mapName(r *Ruleset, c string) string { return pick(r.Maps[c] != nil, c, "") }

// sameDefinitions reports whether every set and map present in both rulesets
// is defined alike; nftables cannot change a set's type in place.
func sameDefinitions(a, b *Ruleset) bool {
	for n, s := range a.Sets {
		if o := b.Sets[n]; o != nil && !reflect.DeepEqual(s, o) {
			return false
		}
	}
	for n, m := range a.Maps {
		if o := b.Maps[n]; o != nil && !reflect.DeepEqual(m, o) {
			return false
		}
	}
	return true
}

// affinityShrank reports whether some (frontend, endpoint) pair that affinity
// entries could hold is no longer valid.
func affinityShrank(prev, cur *Ruleset) bool {
	if prev == nil {
		return true
	}
	for fam, pairs := range prev.Affinity {
		for k := range pairs {
			if !cur.Affinity[fam][k] {
				return true
			}
		}
	}
	return false
}

// purgeAffinity deletes remembered ClientIP choices that point at endpoints a
// frontend no longer has, so clients are re-balanced at once instead of being
// sent to a dead pod until the entry times out. It is best effort: a failure
// only delays the cleanup until the entries expire.
func (a *Applier) purgeAffinity(ctx context.Context, desired *Ruleset) {
	logger := klog.FromContext(ctx)
	tx := a.nft.NewTransaction()
	for _, f := range families {
		els, err := a.nft.ListElements(ctx, "map", f.aff())
		if err != nil {
			logger.V(2).Info("Cannot list affinity map", "map", f.aff(), "err", err)
			continue
		}
		valid := desired.Affinity[f.n]
		for _, e := range els {
			if len(e.Key) != 4 || len(e.Value) != 2 {
				continue
			}
			if !valid[affinityKey(e.Key[1], e.Key[2], e.Key[3], e.Value[0], e.Value[1])] {
				tx.Delete(&knftables.Element{Map: f.aff(), Key: e.Key})
			}
		}
	}
	if tx.NumOperations() == 0 {
		return
	}
	if err := a.nft.Run(ctx, tx); err != nil {
		// An entry may have expired between list and delete; the rest
		// expire on their own.
		logger.V(2).Info("Cannot purge stale affinity entries", "err", err)
	}
}

// sortedKeys makes transactions deterministic, so dumps and logs compare.
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
