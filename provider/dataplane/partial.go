package dataplane

import (
	"context"
	"maps"
	"reflect"
	"slices"

	"k8s.io/klog/v2"
	"sigs.k8s.io/knftables"
)

// ElementChange is one element a partial sync deletes or adds. A changed
// map value is a delete and an add: the kernel will not overwrite an
// element's value with "add".
type ElementChange struct {
	Container string
	Element   Element
	Delete    bool
}

// partialChanges lists what a partial sync sends: element changes, deletes
// first, and chains no verdict names any more. Since herald has no
// per-service chains, a Service or endpoint change is a handful of element
// deletes and adds, whatever the number of Services. chainsOnlyChange must
// have approved the pair.
//
// When desired comes from a Builder whose previous Ruleset is applied, only
// the keys the Builder marked dirty are compared, against the values it
// recorded: a one-Service change among 10k Services then costs a few map
// lookups, not a pass over every element.
func partialChanges(applied, desired *Ruleset) (changes []ElementChange, deadChains []string) {
	if desired.dirty != nil && desired.base == applied {
		changes = dirtyElements(desired)
	} else {
		changes = changedElements(applied, desired)
	}
	for _, name := range sortedKeys(applied.Chains) {
		if desired.Chains[name] == nil {
			deadChains = append(deadChains, name)
		}
	}
	return changes, deadChains
}

// partialTransaction writes partialChanges as nft commands; the dead chains
// go last, once no verdict names them.
func partialTransaction(tx *knftables.Transaction, desired *Ruleset, changes []ElementChange, deadChains []string) {
	for _, c := range changes {
		if c.Delete {
			tx.Delete(&knftables.Element{Set: setName(desired, c.Container), Map: mapName(desired, c.Container), Key: c.Element.Key})
		} else {
			tx.Add(toKnft(desired, c.Container, c.Element))
		}
	}
	for _, name := range deadChains {
		tx.Flush(&knftables.Chain{Name: name})
		tx.Delete(&knftables.Chain{Name: name})
	}
}

func changedElements(applied, desired *Ruleset) []ElementChange {
	var out []ElementChange
	for _, name := range sortedKeys(applied.Elements) {
		if !desired.has(name) {
			continue
		}
		had := applied.Elements[name]
		for _, k := range changedKeys(had, desired.Elements[name]) {
			out = append(out, ElementChange{Container: name, Element: had[k], Delete: true})
		}
	}
	for _, name := range sortedKeys(desired.Elements) {
		want := desired.Elements[name]
		for _, k := range changedKeys(want, applied.Elements[name]) {
			out = append(out, ElementChange{Container: name, Element: want[k]})
		}
	}
	return out
}

// dirtyElements is changedElements over the keys a Builder marked, in the
// same order.
func dirtyElements(desired *Ruleset) []ElementChange {
	var out []ElementChange
	names := sortedKeys(desired.dirty)
	keys := make(map[string][]string, len(names))
	for _, name := range names {
		keys[name] = sortedKeys(desired.dirty[name])
	}
	for _, name := range names {
		for _, k := range keys[name] {
			was := desired.dirty[name][k]
			if now, ok := desired.Elements[name][k]; was.present && (!ok || !now.same(was.el)) {
				out = append(out, ElementChange{Container: name, Element: was.el, Delete: true})
			}
		}
	}
	for _, name := range names {
		for _, k := range keys[name] {
			was := desired.dirty[name][k]
			if now, ok := desired.Elements[name][k]; ok && (!was.present || !now.same(was.el)) {
				out = append(out, ElementChange{Container: name, Element: now})
			}
		}
	}
	return out
}

// chainsOnlyChange reports whether desired can be reached from applied
// with element changes and chains added or deleted, and which chains it
// adds. Changed rules need a full sync, and so do changed set or map
// definitions (nftables cannot retype a set). With pick chains for the
// usual endpoint counts made up front, chains come and go when a Service
// first reaches an unusual endpoint count or affinity timeout.
func chainsOnlyChange(applied, desired *Ruleset) (newChains []string, ok bool) {
	if applied == nil || len(applied.Sets) != len(desired.Sets) || len(applied.Maps) != len(desired.Maps) {
		return nil, false
	}
	// A Builder's Rulesets share their skeleton's definitions: comparing
	// pointers first keeps this from growing with the chains' rules.
	for n, s := range desired.Sets {
		if old := applied.Sets[n]; old != s && !reflect.DeepEqual(s, old) {
			return nil, false
		}
	}
	for n, m := range desired.Maps {
		if old := applied.Maps[n]; old != m && !reflect.DeepEqual(m, old) {
			return nil, false
		}
	}
	for n, c := range desired.Chains {
		old := applied.Chains[n]
		switch {
		case old == nil:
			newChains = append(newChains, n)
		case old != c && (!slices.Equal(old.Rules, c.Rules) || !reflect.DeepEqual(old.Chain, c.Chain)):
			return nil, false
		}
	}
	slices.Sort(newChains)
	return newChains, true
}

func (r *Ruleset) has(container string) bool {
	return r.Sets[container] != nil || r.Maps[container] != nil
}

func setName(r *Ruleset, c string) string { return pick(r.Sets[c] != nil, c, "") }
func mapName(r *Ruleset, c string) string { return pick(r.Maps[c] != nil, c, "") }

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

// changedKeys lists, sorted, the keys of a that b lacks or holds with another
// value. Only the changes are sorted: a sync must not cost a sort of every
// element of a 30k-element map.
func changedKeys(a, b Elements) []string {
	var out []string
	for k, e := range a {
		if o, ok := b[k]; !ok || !o.same(e) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// sortedKeys makes transactions deterministic, so dumps and logs compare.
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
