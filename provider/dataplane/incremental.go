package dataplane

import (
	"cmp"
	"reflect"
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Builder is Build with a memory: it keeps the ruleset's elements,
// data-dependent chains and affinity pairs with the Services that
// contribute them, and recomputes only the Services whose Service or
// EndpointSlice objects changed. Build takes every object and finds the
// changed ones by pointer; Update takes the names of the changed Services
// and looks only those up, so that a sync costs what changed, not what
// exists. Either
// result equals the package's Build for the same input. Objects must not be
// modified in place once passed in (informer caches never are); a changed
// node or Options starts over, which Update cannot do (it sees only the
// changed Services): Primed says when Build must run instead.
//
// The Ruleset it returns also records which element keys may differ from
// the one returned before, and their previous values, so that a partial sync
// of one Service among 10k diffs a handful of keys instead of every element
// (see partialTransaction). Copying the element maps instead would cost more
// than the whole rest of such a sync, so a Builder updates them in place: a
// Ruleset it returned is valid until its next Build or Update, which marks
// it stale. The Applier knows this: when the Ruleset it applied last is
// stale, it syncs in full unless that Ruleset is the one the new one was
// built from. A Builder is not safe for concurrent use.
type Builder struct {
	node    Node
	opts    Options
	started bool
	gen     uint64
	svcs    map[svcID]*svcShare
	// contested holds the keys several Services write (see claim); each
	// element records its one writer itself (Element.by).
	contested map[string]map[string][]owner
	chains    map[string]*chainRef
	affinity  map[string]map[string]int // family → pair → Services holding it
	// elements are the Services' elements as the last Ruleset holds them:
	// take and drop update these maps in place.
	elements map[string]Elements
	// health holds the healthCheckNodePort answers of the Services that
	// need one (see HealthChecks).
	health map[types.NamespacedName]HealthCheck
	// skeleton is what no Service changes: the base builder's chains, sets,
	// maps and node elements, made once per node and Options.
	skeleton builder
	// scratch receives one Service at a time; its maps are cleared, not
	// reallocated, between Services.
	scratch *Ruleset
	last    *Ruleset
	// round is the Build or Update in progress.
	round round
}

// round is the bookkeeping of one Build or Update.
type round struct {
	dirty      map[string]map[string]prior
	affChanged bool
}

// Source looks up a Service and the EndpointSlices labelled with its name,
// as the agent's informer caches do; Update reads through it.
type Source interface {
	// Service returns the Service, or nil if there is none.
	Service(namespace, name string) *Service
	EndpointSlices(namespace, service string) []*EndpointSlice
}

type svcID struct{ ns, name string }

func (a svcID) compare(b svcID) int {
	return cmp.Or(cmp.Compare(a.ns, b.ns), cmp.Compare(a.name, b.name))
}

// svcShare is one Service's part of the ruleset: the objects it is
// computed from. What they contribute (elements, data-dependent chains,
// affinity pairs) lives in the Builder's claims and chains alone; which
// keys, chains and pairs those are is computed again when the share is
// dropped (see contribution) rather than listed here: a Service computes
// in microseconds, and at 10k Services the lists were 3 of the Builder's
// 28 MiB.
type svcShare struct {
	id     svcID
	svc    *Service
	slices []*EndpointSlice
	gen    uint64
	health *HealthCheck
}

// owner is one of the writers of a contested key, with the element it
// writes. Nearly every key has one writer, whose element is the Builder's
// elements' own and names its share (Element.by) alone (at 10k Services,
// 50k keys: a Service's name per key was a sixth of the Builder's memory,
// a list per key a quarter, a map of writers an eighth). Keys that several Services
// write (one external IP and port on two Services) keep every writer's
// element, ordered as Build processes Services: the last one wins.
type owner struct {
	s  *svcShare
	el Element
}

type chainRef struct {
	chain *Chain
	users int
}

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder { return &Builder{} }

// Primed reports whether Update can follow: a Build has run for this node
// and these Options.
func (b *Builder) Primed(node Node, opts Options) bool {
	return b.started && reflect.DeepEqual(node, b.node) && reflect.DeepEqual(opts, b.opts)
}

// Build returns the ruleset for the given state, as Build does.
func (b *Builder) Build(services []*Service, endpointSlices []*EndpointSlice, node Node, opts Options) *Ruleset {
	if !b.Primed(node, opts) {
		b.reset(node, opts)
	}
	b.begin()
	bySvc := groupSlices(endpointSlices)
	for _, svc := range services {
		if svc == nil || svc.Type == v1.ServiceTypeExternalName {
			continue
		}
		id := svcID{svc.Namespace, svc.Name}
		b.refresh(id, svc, bySvc[id])
	}
	for id, s := range b.svcs {
		if s.gen != b.gen {
			b.forget(id)
		}
	}
	return b.finish()
}

// Update returns the ruleset after the named Services changed (were added,
// modified or deleted, or had EndpointSlices added, modified or deleted),
// reading only those through src. Every Service changed since the previous
// Build or Update must be named; naming an unchanged one costs a lookup.
// Primed must hold.
func (b *Builder) Update(changed []types.NamespacedName, src Source) *Ruleset {
	b.begin()
	for _, n := range changed {
		id := svcID{n.Namespace, n.Name}
		svc := src.Service(n.Namespace, n.Name)
		if svc == nil || svc.Type == v1.ServiceTypeExternalName {
			b.forget(id)
			continue
		}
		b.refresh(id, svc, src.EndpointSlices(n.Namespace, n.Name))
	}
	return b.finish()
}

func (b *Builder) begin() {
	b.gen++
	b.round = round{}
	if b.last != nil {
		b.round.dirty = map[string]map[string]prior{}
	}
}

// refresh recomputes one Service's share unless its objects are the ones
// it was computed from.
func (b *Builder) refresh(id svcID, svc *Service, sl []*EndpointSlice) {
	old := b.svcs[id]
	if old != nil && old.svc == svc && sameSlices(old.slices, sl) {
		old.gen = b.gen
		return
	}
	if old != nil {
		b.round.affChanged = b.drop(old, b.round.dirty) || b.round.affChanged
	}
	s := b.share(id, svc, slices.Clone(sl)) // sl may be reused by the caller
	b.svcs[id] = s
	b.round.affChanged = b.take(s, b.contribution(svc, s.slices), b.round.dirty) || b.round.affChanged
}

func (b *Builder) forget(id svcID) {
	if s := b.svcs[id]; s != nil {
		b.round.affChanged = b.drop(s, b.round.dirty) || b.round.affChanged
		delete(b.svcs, id)
	}
}

// finish assembles the round's Ruleset and marks the previous one stale.
func (b *Builder) finish() *Ruleset {
	r := b.skeleton.fork()
	b.assemble(r, b.round.affChanged)
	if b.last != nil {
		// take and drop updated the element maps b.last shares
		b.last.stale = true
		b.last.base, b.last.dirty = nil, nil // keep no chain of old Rulesets alive
		r.base, r.dirty = b.last, b.round.dirty
	}
	b.last = r
	b.round = round{}
	return r
}

func (b *Builder) reset(node Node, opts Options) {
	*b = Builder{
		node: node, opts: opts, started: true,
		svcs:      map[svcID]*svcShare{},
		contested: map[string]map[string][]owner{},
		chains:    map[string]*chainRef{},
		affinity:  map[string]map[string]int{},
		elements:  map[string]Elements{},
		health:    map[types.NamespacedName]HealthCheck{},
		skeleton:  newBaseBuilder(node, opts),
	}
}

// groupSlices is slicesByService keyed without building strings. The map
// is Build's alone: a Builder keeping it between Builds also kept every
// replaced EndpointSlice its lists' spare capacity still pointed at.
func groupSlices(all []*EndpointSlice) map[svcID][]*EndpointSlice {
	bySvc := make(map[svcID][]*EndpointSlice, len(all))
	for _, s := range all {
		if s == nil {
			continue
		}
		if s.Service != "" {
			id := svcID{s.Namespace, s.Service}
			bySvc[id] = append(bySvc[id], s)
		}
	}
	return bySvc
}

// sameSlices compares two lists of EndpointSlices as sets: listers return
// them in no particular order.
func sameSlices(a, b []*EndpointSlice) bool {
	if len(a) != len(b) {
		return false
	}
	for _, s := range a {
		if !slices.Contains(b, s) {
			return false
		}
	}
	return true
}

// share starts a Service's share.
func (b *Builder) share(id svcID, svc *Service, sl []*EndpointSlice) *svcShare {
	s := &svcShare{id: id, svc: svc, slices: sl, gen: b.gen}
	if needsHealthCheck(svc) {
		hc := healthCheck(svc, sl, b.node.Name)
		s.health = &hc
	}
	return s
}

// contribution computes what one Service contributes, with the same code
// as Build, into the scratch Ruleset, which the next call reuses. It is
// pure: a share's objects are never modified, so they contribute the same
// when the share is dropped as when it was taken.
func (b *Builder) contribution(svc *Service, sl []*EndpointSlice) *Ruleset {
	own := b.scratch
	if own == nil {
		own = &Ruleset{Chains: map[string]*Chain{}, Elements: map[string]Elements{}, Affinity: map[string]map[string]bool{}}
		b.scratch = own
	}
	clear(own.Chains)
	for _, els := range own.Elements {
		clear(els)
	}
	for _, pairs := range own.Affinity {
		clear(pairs)
	}
	sb := builder{r: own, node: b.skeleton.node, opts: b.skeleton.opts, nodePortIPs: b.skeleton.nodePortIPs}
	sb.addService(svc, sl)
	return own
}

// HealthChecks is the package's HealthChecks for the Services of the last
// Build or Update, kept up to date with them. The map is the Builder's: the
// caller must not modify it, and it changes with the next Build or Update.
func (b *Builder) HealthChecks() map[types.NamespacedName]HealthCheck { return b.health }

// Services counts the Services that have rules.
func (b *Builder) Services() int { return len(b.svcs) }

// take adds a Service's share, whose contribution is own; it reports
// whether affinity pairs changed.
func (b *Builder) take(s *svcShare, own *Ruleset, dirty map[string]map[string]prior) bool {
	if s.health != nil {
		b.health[types.NamespacedName{Namespace: s.id.ns, Name: s.id.name}] = *s.health
	}
	for c, els := range own.Elements {
		for key, el := range els {
			b.markDirty(dirty, c, key)
			b.claim(c, key, owner{s: s, el: el})
		}
	}
	for name, chain := range own.Chains {
		ref := b.chains[name]
		if ref == nil {
			ref = &chainRef{chain: chain}
			b.chains[name] = ref
		}
		ref.users++
	}
	changed := false
	for fam, pairs := range own.Affinity {
		for k := range pairs {
			counts := b.affinity[fam]
			if counts == nil {
				counts = map[string]int{}
				b.affinity[fam] = counts
			}
			counts[k]++
			changed = true
		}
	}
	return changed
}

// drop removes a Service's share; it reports whether affinity pairs changed.
func (b *Builder) drop(s *svcShare, dirty map[string]map[string]prior) bool {
	delete(b.health, types.NamespacedName{Namespace: s.id.ns, Name: s.id.name})
	own := b.contribution(s.svc, s.slices)
	for c, els := range own.Elements {
		for key := range els {
			b.markDirty(dirty, c, key)
			b.unclaim(c, key, s.id)
		}
	}
	for name := range own.Chains {
		if ref := b.chains[name]; ref != nil {
			if ref.users--; ref.users == 0 {
				delete(b.chains, name)
			}
		}
	}
	changed := false
	for fam, pairs := range own.Affinity {
		for k := range pairs {
			if counts := b.affinity[fam]; counts != nil {
				if counts[k]--; counts[k] <= 0 {
					delete(counts, k)
				}
			}
			changed = true
		}
	}
	return changed
}

// claim records that o writes an element key, and updates the element.
// A share is always dropped before its replacement is taken, so elements
// never point at a share that is gone.
func (b *Builder) claim(container, key string, o owner) {
	els := b.elements[container]
	if els == nil {
		els = Elements{}
		b.elements[container] = els
	}
	o.el.by = o.s
	cur, ok := els[key]
	if !ok {
		els[key] = o.el
		return
	}
	all := b.contested[container][key]
	if all == nil {
		all = []owner{{s: cur.by, el: cur}}
	}
	i, _ := slices.BinarySearchFunc(all, o.s.id, func(x owner, id svcID) int { return x.s.id.compare(id) })
	b.settle(container, key, slices.Insert(all, i, o))
}

// unclaim records that Service id no longer writes an element key.
func (b *Builder) unclaim(container, key string, id svcID) {
	all := b.contested[container][key]
	if all == nil {
		delete(b.elements[container], key)
		return
	}
	b.settle(container, key, slices.DeleteFunc(all, func(o owner) bool { return o.s.id == id }))
}

// settle stores the writers of a contested key and its winner's element; a
// key left with one writer is no longer contested.
func (b *Builder) settle(container, key string, all []owner) {
	last := all[len(all)-1]
	b.elements[container][key] = last.el
	byKey := b.contested[container]
	if byKey == nil {
		byKey = map[string][]owner{}
		b.contested[container] = byKey
	}
	if len(all) == 1 {
		delete(byKey, key)
		return
	}
	byKey[key] = all
}

// prior is an element as the previous Ruleset held it.
type prior struct {
	el      Element
	present bool
}

// markDirty records, before its first change in this Build, what a key held.
func (b *Builder) markDirty(dirty map[string]map[string]prior, container, key string) {
	if dirty == nil {
		return
	}
	keys := dirty[container]
	if keys == nil {
		keys = map[string]prior{}
		dirty[container] = keys
	}
	if _, seen := keys[key]; !seen {
		el, ok := b.elements[container][key]
		keys[key] = prior{el: el, present: ok}
	}
}

// assemble completes r (skeleton and node addresses already in it) with the
// Services' elements, chains and affinity pairs.
func (b *Builder) assemble(r *Ruleset, affChanged bool) {
	for name, ref := range b.chains {
		if r.Chains[name] == nil {
			r.Chains[name] = ref.chain
		}
	}
	for c, els := range b.elements {
		if len(els) > 0 {
			r.Elements[c] = els
		}
	}
	if b.last != nil && !affChanged {
		r.Affinity = b.last.Affinity
		return
	}
	for fam, pairs := range b.affinity {
		if len(pairs) == 0 {
			continue
		}
		valid := make(map[string]bool, len(pairs))
		for k := range pairs {
			valid[k] = true
		}
		r.Affinity[fam] = valid
	}
}
