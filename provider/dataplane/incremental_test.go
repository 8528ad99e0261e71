package dataplane

import (
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"
)

type buildState struct {
	name   string
	svcs   []*v1.Service
	slices []*discoveryv1.EndpointSlice
	node   Node
	opts   Options
}

func inNamespace(ns string) svcMod { return func(s *v1.Service) { s.Namespace = ns } }

func sliceIn(ns string, s *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	s.Namespace = ns
	return s
}

// builderStates is a walk through changes that a Builder must follow
// exactly: endpoint changes, Services coming and going, a Service claimed
// by two owners (the later one in Build's order wins), affinity, source
// ranges, traffic policies, a new node address and new Options.
func builderStates() []buildState {
	svcs, sl := scaleCluster(40)
	extra := []*v1.Service{
		service("aff", clusterIPs("198.51.100.7"), ports(port("http", v1.ProtocolTCP, 80, 30007)),
			lbIngress("203.0.113.7"), clientIPAffinity(60), sourceRangesMod("192.0.2.0/25", "2001:db8::/64")),
		service("local", clusterIPs("198.51.100.8"), ports(port("http", v1.ProtocolTCP, 80, 30008)),
			lbIngress("203.0.113.8"), etpLocal, itpLocal, healthCheckNodePort(32008)),
		// two owners of 203.0.113.9:80; Build orders by namespace, then name
		service("z", inNamespace("a"), clusterIPs("198.51.100.9"), externalIPs("203.0.113.9"), ports(port("http", v1.ProtocolTCP, 80, 0))),
		service("a", inNamespace("a-b"), clusterIPs("198.51.100.10"), externalIPs("203.0.113.9"), ports(port("http", v1.ProtocolTCP, 80, 0))),
		service("ext", svcType(v1.ServiceTypeExternalName)),
	}
	extraSlices := []*discoveryv1.EndpointSlice{
		endpointSlice("aff", "aff-1", discoveryv1.AddressTypeIPv4, tcpHTTP, ep{"192.0.2.71", thisNode, ready}, ep{"192.0.2.72", otherNode, ready}),
		endpointSlice("local", "local-1", discoveryv1.AddressTypeIPv4, tcpHTTP, ep{"192.0.2.81", otherNode, ready}, ep{"192.0.2.82", thisNode, terminatingServing}),
		sliceIn("a", endpointSlice("z", "z-1", discoveryv1.AddressTypeIPv4, tcpHTTP, ep{"192.0.2.91", otherNode, ready})),
		sliceIn("a-b", endpointSlice("a", "a-1", discoveryv1.AddressTypeIPv4, tcpHTTP, ep{"192.0.2.92", otherNode, ready})),
	}
	all := append(slices.Clone(svcs), extra...)
	allSl := append(slices.Clone(sl), extraSlices...)
	st := []buildState{{name: "start", svcs: all, slices: allSl, node: testNode}}
	next := func(name string, f func(s *buildState)) {
		s := st[len(st)-1]
		s.name, s.svcs, s.slices = name, slices.Clone(s.svcs), slices.Clone(s.slices)
		f(&s)
		st = append(st, s)
	}
	next("unchanged", func(*buildState) {})
	next("lists reordered", func(s *buildState) { slices.Reverse(s.svcs); slices.Reverse(s.slices) })
	next("scale one to 4", func(s *buildState) { s.slices[slices.Index(s.slices, sl[7])] = scaleSlice(svcs[7].Name, 7, 4) })
	next("scale one to 70", func(s *buildState) {
		// a second slice, as the EndpointSlice controller makes past 100
		// endpoints; it repeats the first one's three, which count once
		more := scaleSlice(svcs[9].Name, 9, 70)
		more.Name = svcs[9].Name + "-2"
		s.slices = append(s.slices, more)
	})
	next("scale one to 0", func(s *buildState) {
		s.slices = slices.DeleteFunc(s.slices, func(x *discoveryv1.EndpointSlice) bool { return x == sl[3] })
	})
	next("later owner goes", func(s *buildState) {
		s.svcs = slices.DeleteFunc(s.svcs, func(x *v1.Service) bool { return x == extra[3] })
	})
	next("later owner back", func(s *buildState) { s.svcs = append(s.svcs, extra[3]) })
	next("affinity timeout", func(s *buildState) {
		i := slices.Index(s.svcs, extra[0])
		s.svcs[i] = service("aff", clusterIPs("198.51.100.7"), ports(port("http", v1.ProtocolTCP, 80, 30007)),
			lbIngress("203.0.113.7"), clientIPAffinity(90))
	})
	next("local endpoint ready", func(s *buildState) {
		s.slices[slices.Index(s.slices, extraSlices[1])] = endpointSlice("local", "local-1", discoveryv1.AddressTypeIPv4, tcpHTTP,
			ep{"192.0.2.81", otherNode, ready}, ep{"192.0.2.82", thisNode, ready})
	})
	next("affinity endpoint goes", func(s *buildState) {
		s.slices[slices.Index(s.slices, extraSlices[0])] = endpointSlice("aff", "aff-1", discoveryv1.AddressTypeIPv4, tcpHTTP, ep{"192.0.2.71", thisNode, ready})
	})
	next("becomes ExternalName", func(s *buildState) {
		s.svcs[slices.Index(s.svcs, svcs[11])] = service(svcs[11].Name, svcType(v1.ServiceTypeExternalName))
	})
	next("new node address", func(s *buildState) {
		s.node = Node{Name: thisNode, IPs: []netip.Addr{nodeIP4, nodeIP6, netip.MustParseAddr("192.0.2.11")}}
	})
	next("pod CIDRs", func(s *buildState) {
		s.opts = Options{Local: LocalDetector{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}}
	})
	next("bridge interface", func(s *buildState) { s.opts = Options{Local: LocalDetector{Interface: "cbr0"}} })
	next("pod interface prefix", func(s *buildState) {
		s.opts = Options{Local: LocalDetector{Interface: "veth", InterfacePrefix: true}}
	})
	next("one more service", func(s *buildState) {
		s.svcs = append(s.svcs, service("late", clusterIPs("198.51.100.99"), ports(tcp80)))
		s.slices = append(s.slices, endpointSlice("late", "late-1", discoveryv1.AddressTypeIPv4, tcpHTTP, ep{"192.0.2.99", thisNode, ready}))
	})
	next("all gone", func(s *buildState) { s.svcs, s.slices = nil, nil })
	return st
}

// normalAffinity drops empty families: Build may create one, Builder does not.
func normalAffinity(a map[string]map[string]bool) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for f, pairs := range a {
		if len(pairs) > 0 {
			out[f] = pairs
		}
	}
	return out
}

func TestBuilderEqualsBuild(t *testing.T) {
	for _, mode := range []string{"Build", "Update"} {
		t.Run(mode, func(t *testing.T) {
			b := NewBuilder()
			var prev *buildState
			for _, s := range builderStates() {
				got := builderNext(b, mode, prev, &s)
				want := Build(s.svcs, s.slices, s.node, s.opts)
				for _, d := range rulesetDiffs(got, want) {
					t.Errorf("%s: %s", s.name, d)
				}
				if got, want := b.HealthChecks(), HealthChecks(s.svcs, s.slices, s.node.Name); !maps.Equal(got, want) {
					t.Errorf("%s: health checks %v, want %v", s.name, got, want)
				}
				prev = &s
			}
		})
	}
}

// builderNext moves b to state s: with Build, or, in mode "Update" once b
// is primed for s's node and Options, with Update naming what changed since
// prev, as the agent's informer handlers do.
func builderNext(b *Builder, mode string, prev, s *buildState) *Ruleset {
	if mode == "Build" || prev == nil || !b.Primed(s.node, s.opts) {
		return buildObjects(b, s.svcs, s.slices, s.node, s.opts)
	}
	return b.Update(changedServices(prev, s), mapSource(s))
}

// changedServices names the Services whose Service object or EndpointSlices
// differ (by pointer) between two states: what informer events would report.
func changedServices(prev, next *buildState) []types.NamespacedName {
	seen := map[types.NamespacedName]int{}
	for _, st := range []*buildState{prev, next} {
		for _, svc := range st.svcs {
			seen[types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}]++
		}
		for _, sl := range st.slices {
			seen[types.NamespacedName{Namespace: sl.Namespace, Name: sl.Labels[discoveryv1.LabelServiceName]}]++
		}
	}
	var out []types.NamespacedName
	for n := range seen {
		a, b := mapSource(prev), mapSource(next)
		if a.Service(n.Namespace, n.Name) != b.Service(n.Namespace, n.Name) ||
			!sameSlices(a.EndpointSlices(n.Namespace, n.Name), b.EndpointSlices(n.Namespace, n.Name)) {
			out = append(out, n)
		}
	}
	return out
}

// listSource is a Source over a state's lists, as the informer caches are.
type listSource struct{ st *buildState }

func (m listSource) Service(ns, name string) *Service {
	for _, svc := range compactServices(m.st.svcs) {
		if svc.Namespace == ns && svc.Name == name {
			return svc
		}
	}
	return nil
}

func (m listSource) EndpointSlices(ns, name string) []*EndpointSlice {
	var out []*EndpointSlice
	for _, sl := range compactSlices(m.st.slices) {
		if sl.Namespace == ns && sl.Service == name {
			out = append(out, sl)
		}
	}
	return out
}

func mapSource(s *buildState) Source { return listSource{s} }

// withoutWriters is els without what only a Builder's elements record.
func withoutWriters(els Elements) Elements {
	if els == nil {
		return nil
	}
	out := make(Elements, len(els))
	for k, e := range els {
		e.by = nil
		out[k] = e
	}
	return out
}

// rulesetDiffs names what differs between two Rulesets: chains and their
// rules, sets, maps, every container's elements, and the affinity pairs.
func rulesetDiffs(got, want *Ruleset) []string {
	var out []string
	if !reflect.DeepEqual(got.Chains, want.Chains) {
		out = append(out, fmt.Sprintf("chains differ:\n got %v\nwant %v",
			slices.Sorted(maps.Keys(got.Chains)), slices.Sorted(maps.Keys(want.Chains))))
	}
	if !reflect.DeepEqual(got.Sets, want.Sets) || !reflect.DeepEqual(got.Maps, want.Maps) {
		out = append(out, "sets or maps differ")
	}
	for c := range mergeKeys(got.Elements, want.Elements) {
		if !reflect.DeepEqual(withoutWriters(got.Elements[c]), withoutWriters(want.Elements[c])) {
			out = append(out, fmt.Sprintf("elements of %s differ:\n got %v\nwant %v", c, got.Elements[c], want.Elements[c]))
		}
	}
	if len(got.Elements) != len(want.Elements) {
		out = append(out, fmt.Sprintf("%d containers with elements, want %d", len(got.Elements), len(want.Elements)))
	}
	if !reflect.DeepEqual(normalAffinity(got.Affinity), normalAffinity(want.Affinity)) {
		out = append(out, fmt.Sprintf("affinity pairs differ:\n got %v\nwant %v", got.Affinity, want.Affinity))
	}
	return out
}

func mergeKeys[V any](a, b map[string]V) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// TestBuilderPartialEqualsFull applies the Builder's Rulesets one after the
// other, so that partial syncs diff only the keys it marked, and checks the
// table against a full sync each time.
func TestBuilderPartialEqualsFull(t *testing.T) {
	for _, mode := range []string{"Build", "Update"} {
		t.Run(mode, func(t *testing.T) {
			fake := knftables.NewFake(TableFamily, TableName)
			a := NewApplier(fake)
			b := NewBuilder()
			partials := 0
			var prev *buildState
			for _, s := range builderStates() {
				res := syncOK(t, a, builderNext(b, mode, prev, &s))
				if !res.Full {
					partials++
				}
				ref := knftables.NewFake(TableFamily, TableName)
				syncOK(t, NewApplier(ref), Build(s.svcs, s.slices, s.node, s.opts))
				if got, want := sortedDump(fake.Dump()), sortedDump(ref.Dump()); got != want {
					t.Errorf("%s: partial result differs from full:\n got %s\nwant %s", s.name, got, want)
				}
				prev = &s
			}
			if partials < 8 {
				t.Errorf("only %d partial syncs: the walk no longer tests them", partials)
			}
		})
	}
}

// TestBuilderPartialSyncIsSmall: one Service's change among many is a few
// operations, found without diffing every element.
func TestBuilderPartialSyncIsSmall(t *testing.T) {
	svcs, sl := scaleCluster(200)
	b := NewBuilder()
	a := NewApplier(knftables.NewFake(TableFamily, TableName))
	syncOK(t, a, buildObjects(b, svcs, sl, testNode, Options{}))
	sl = slices.Clone(sl)
	sl[42] = scaleSlice(svcs[42].Name, 42, 4)
	r := buildObjects(b, svcs, sl, testNode, Options{})
	if n := dirtyKeys(r); n > 8 {
		t.Errorf("%d dirty keys for one Service", n)
	}
	if res := syncOK(t, a, r); res.Full || res.Operations != 3 {
		t.Errorf("want 3 operations in a partial sync, got %+v", res)
	}
}

func dirtyKeys(r *Ruleset) int {
	n := 0
	for _, keys := range r.dirty {
		n += len(keys)
	}
	return n
}

func ExampleBuilder() {
	b := NewBuilder()
	svc := service("web", clusterIPs("198.51.100.1"), ports(port("http", v1.ProtocolTCP, 80, 0)))
	r1 := buildObjects(b, []*v1.Service{svc}, nil, testNode, Options{})
	r2 := buildObjects(b, []*v1.Service{svc}, []*discoveryv1.EndpointSlice{webSlice(ep{"192.0.2.101", thisNode, ready})}, testNode, Options{})
	fmt.Println(len(r1.Elements["svc4"]), len(r2.Elements["svc4"]), dirtyKeys(r2))
	// Output: 0 1 5
}

// TestBuilderSkippedRulesetForcesFull: a Builder updates element maps in
// place, so a Ruleset built but never applied leaves the applier unable to
// diff; it must sync in full, and correctly.
func TestBuilderSkippedRulesetForcesFull(t *testing.T) {
	st := builderStates()
	fake := knftables.NewFake(TableFamily, TableName)
	a := NewApplier(fake)
	b := NewBuilder()
	syncOK(t, a, buildObjects(b, st[0].svcs, st[0].slices, st[0].node, st[0].opts))
	buildObjects(b, st[3].svcs, st[3].slices, st[3].node, st[3].opts) // never applied
	s := st[4]
	if res := syncOK(t, a, buildObjects(b, s.svcs, s.slices, s.node, s.opts)); !res.Full {
		t.Error("a sync after a skipped Ruleset must be full")
	}
	ref := knftables.NewFake(TableFamily, TableName)
	syncOK(t, NewApplier(ref), Build(s.svcs, s.slices, s.node, s.opts))
	if got, want := sortedDump(fake.Dump()), sortedDump(ref.Dump()); got != want {
		t.Errorf("table differs from a full sync:\n got %s\nwant %s", got, want)
	}
}

// TestBuilderNewNodeAddressIsPartial: a new node or Options start the
// Builder over, which leaves the applied Ruleset intact, so the applier can
// still diff it against the new one.
func TestBuilderNewNodeAddressIsPartial(t *testing.T) {
	st := builderStates()
	fake := knftables.NewFake(TableFamily, TableName)
	a := NewApplier(fake)
	b := NewBuilder()
	syncOK(t, a, buildObjects(b, st[0].svcs, st[0].slices, st[0].node, st[0].opts))
	node := Node{Name: thisNode, IPs: []netip.Addr{nodeIP4, nodeIP6, netip.MustParseAddr("192.0.2.11")}}
	if res := syncOK(t, a, buildObjects(b, st[0].svcs, st[0].slices, node, st[0].opts)); res.Full || res.Operations != 1 {
		t.Errorf("a new node address: want a partial sync of one element, got %+v", res)
	}
}
