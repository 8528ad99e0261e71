package ipam

import (
	"errors"
	"slices"
	"testing"
)

func TestAllocateAny(t *testing.T) {
	runScenarios(t, []scenario{
		{
			name:  "lowest free address, in order",
			pools: []Pool{pool("a", "192.0.2.0/30")},
			steps: []step{
				allocIn(req("ns/a"), "a", "192.0.2.0"),
				allocate(req("ns/b"), "192.0.2.1"),
				allocate(req("ns/c"), "192.0.2.2"),
			},
		},
		{
			name: "lower priority value wins",
			pools: []Pool{
				with(pool("a", "192.0.2.0/30"), func(p *Pool) { p.Priority = 5 }),
				with(pool("b", "198.51.100.0/30"), func(p *Pool) { p.Priority = 1 }),
			},
			steps: []step{allocIn(req("ns/a"), "b", "198.51.100.0")},
		},
		{
			name:  "equal priority: name breaks the tie",
			pools: []Pool{pool("zeta", "192.0.2.0/30"), pool("alpha", "198.51.100.0/30")},
			steps: []step{allocIn(req("ns/a"), "alpha", "198.51.100.0")},
		},
		{
			name: "preferred pool full: next pool",
			pools: []Pool{
				with(pool("a", "192.0.2.1-192.0.2.2"), func(p *Pool) { p.Priority = 1 }),
				with(pool("b", "198.51.100.7/32"), func(p *Pool) { p.Priority = 2 }),
			},
			steps: []step{
				allocate(req("ns/a"), "192.0.2.1"),
				allocate(req("ns/b"), "192.0.2.2"),
				allocIn(req("ns/c"), "b", "198.51.100.7"),
				allocErr(req("ns/d"), ErrPoolExhausted),
			},
		},
		{
			name:  "ranges of a pool are used in configured order",
			pools: []Pool{pool("a", "198.51.100.9/32", "192.0.2.0/31")},
			steps: []step{
				allocate(req("ns/a"), "198.51.100.9"),
				allocate(req("ns/b"), "192.0.2.0"),
			},
		},
	})
}

func TestAutoAssignAndBuggyIPs(t *testing.T) {
	runScenarios(t, []scenario{
		{
			name: "autoAssign off: skipped for any address",
			pools: []Pool{
				with(pool("manual", "192.0.2.0/30"), func(p *Pool) { p.AutoAssign = false; p.Priority = -1 }),
				pool("auto", "198.51.100.0/30"),
			},
			steps: []step{allocIn(req("ns/a"), "auto", "198.51.100.0")},
		},
		{
			name:  "autoAssign off and alone: nothing eligible",
			pools: []Pool{with(pool("manual", "192.0.2.0/30"), func(p *Pool) { p.AutoAssign = false })},
			steps: []step{allocErr(req("ns/a"), ErrFamilyUnavailable)},
		},
		{
			name:  "autoAssign off: used when named",
			pools: []Pool{with(pool("manual", "192.0.2.0/30"), func(p *Pool) { p.AutoAssign = false })},
			steps: []step{allocIn(req("ns/a", fromPool("manual")), "manual", "192.0.2.0")},
		},
		{
			name:  "autoAssign off: used for a specific address",
			pools: []Pool{with(pool("manual", "192.0.2.0/30"), func(p *Pool) { p.AutoAssign = false })},
			steps: []step{allocIn(req("ns/a", wantIPs("192.0.2.2")), "manual", "192.0.2.2")},
		},
		{
			name:  "avoidBuggyIPs skips .255 and .0",
			pools: []Pool{with(pool("a", "192.0.2.254-192.0.3.1"), func(p *Pool) { p.AvoidBuggyIPs = true })},
			steps: []step{
				allocate(req("ns/a"), "192.0.2.254"),
				allocate(req("ns/b"), "192.0.3.1"),
				allocErr(req("ns/c"), ErrPoolExhausted),
				usage("a", IPv4, 2, 2),
			},
		},
		{
			name:  "avoidBuggyIPs: a specific .255 is refused, one already shown is kept",
			pools: []Pool{with(pool("a", "192.0.2.0/24"), func(p *Pool) { p.AvoidBuggyIPs = true })},
			steps: []step{
				allocErr(req("ns/a", wantIPs("192.0.2.255")), ErrNotInAnyPool),
				restore(req("ns/a"), "192.0.2.0"), // held before the pool avoided it
				usage("a", IPv4, 254, 0),
			},
		},
	})
}

func TestAllocateEdges(t *testing.T) {
	runScenarios(t, []scenario{
		{
			name:  "IPv6 only",
			pools: []Pool{pool("v4", "192.0.2.0/30"), pool("v6", "2001:db8::/120")},
			steps: []step{allocIn(req("ns/a", fams(IPv6)), "v6", "2001:db8::1")},
		},
		{
			name:  "IPv6 requested, only IPv4 pools",
			pools: []Pool{pool("v4", "192.0.2.0/30")},
			steps: []step{allocErr(req("ns/a", fams(IPv6)), ErrFamilyUnavailable)},
		},
		{
			name:  "range ending at the last IPv6 address",
			pools: []Pool{pool("top", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127")},
			steps: []step{
				allocate(req("ns/a", fams(IPv6)), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"),
				allocate(req("ns/b", fams(IPv6)), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
				allocErr(req("ns/c", fams(IPv6)), ErrPoolExhausted),
				release("ns/a", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"),
				allocate(req("ns/d", fams(IPv6)), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"),
			},
		},
		{
			name:  "no pools at all",
			pools: nil,
			steps: []step{allocErr(req("ns/a"), ErrFamilyUnavailable)},
		},
		{
			name:  "invalid requests",
			pools: []Pool{pool("a", "192.0.2.0/30", "2001:db8::/120")},
			steps: []step{
				allocErr(req(""), ErrInvalidRequest),
				allocErr(req("ns/a", fams()), ErrInvalidRequest),
				allocErr(req("ns/a", fams(IPv4, IPv4)), ErrInvalidRequest),
				allocErr(req("ns/a", fams("IPv5")), ErrInvalidRequest),
				allocErr(req("ns/a", wantIPs("192.0.2.1", "192.0.2.2")), ErrInvalidRequest),
				allocErr(req("ns/a", wantIPs("2001:db8::1")), ErrInvalidRequest),
				allocErr(req("ns/a", fams(IPv6), wantIPs("fe80::1%eth0")), ErrInvalidRequest),
				allocErr(req("ns/a", wantIPs("::ffff:192.0.2.1")), ErrInvalidRequest),
			},
		},
	})
}

func TestScoping(t *testing.T) {
	teamA := with(pool("team-a", "192.0.2.0/30"), func(p *Pool) { p.Namespaces = []string{"a"}; p.Priority = -1 })
	prod := with(pool("prod", "192.0.2.8/30"), func(p *Pool) {
		p.NamespaceSelectors = []labelsSelector{sel("env=prod")}
		p.Priority = -1
	})
	web := with(pool("web", "192.0.2.16/30"), func(p *Pool) {
		p.ServiceSelectors = []labelsSelector{sel("tier in (web,edge)"), sel("public")}
		p.Priority = -1
	})
	shared := pool("shared", "198.51.100.0/30")
	runScenarios(t, []scenario{
		{
			name:  "namespace list",
			pools: []Pool{teamA, shared},
			steps: []step{
				allocIn(req("a/x"), "team-a", "192.0.2.0"),
				allocIn(req("b/x"), "shared", "198.51.100.0"),
			},
		},
		{
			name:  "namespace selector",
			pools: []Pool{prod, shared},
			steps: []step{
				allocIn(req("p/x", nsLabels("env=prod")), "prod", "192.0.2.8"),
				allocIn(req("d/x", nsLabels("env=dev")), "shared", "198.51.100.0"),
				allocIn(req("n/x"), "shared", "198.51.100.1"),
			},
		},
		{
			name:  "service selectors: any one matches",
			pools: []Pool{web, shared},
			steps: []step{
				allocIn(req("n/a", svcLabels("tier=edge")), "web", "192.0.2.16"),
				allocIn(req("n/b", svcLabels("public=yes")), "web", "192.0.2.17"),
				allocIn(req("n/c", svcLabels("tier=db")), "shared", "198.51.100.0"),
			},
		},
		{
			name:  "named pool outside the service's scope",
			pools: []Pool{teamA, shared},
			steps: []step{
				allocErr(req("b/x", fromPool("team-a")), ErrPoolNotEligible),
				allocIn(req("a/x", fromPool("team-a")), "team-a", "192.0.2.0"),
			},
		},
		{
			name:  "specific address in a pool outside the service's scope",
			pools: []Pool{prod, shared},
			steps: []step{
				allocErr(req("d/x", wantIPs("192.0.2.9"), nsLabels("env=dev")), ErrPoolNotEligible),
				allocate(req("p/x", wantIPs("192.0.2.9"), nsLabels("env=prod")), "192.0.2.9"),
			},
		},
		{
			name:  "unknown named pool",
			pools: []Pool{shared},
			steps: []step{allocErr(req("n/x", fromPool("nope")), ErrUnknownPool)},
		},
		{
			name:  "no pool in scope",
			pools: []Pool{teamA},
			steps: []step{allocErr(req("b/x"), ErrFamilyUnavailable)},
		},
	})
}

func TestSpecificAddresses(t *testing.T) {
	runScenarios(t, []scenario{
		{
			name:  "specific address, then the cursor skips it",
			pools: []Pool{pool("a", "192.0.2.0/30")},
			steps: []step{
				allocate(req("n/a", wantIPs("192.0.2.1")), "192.0.2.1"),
				allocate(req("n/b"), "192.0.2.0"),
				allocate(req("n/c"), "192.0.2.2"),
			},
		},
		{
			name:  "specific address in use",
			pools: []Pool{pool("a", "192.0.2.0/30")},
			steps: []step{
				allocate(req("n/a"), "192.0.2.0"),
				allocErr(req("n/b", wantIPs("192.0.2.0")), ErrAddressInUse),
			},
		},
		{
			name:  "specific address outside every pool",
			pools: []Pool{pool("a", "192.0.2.0/30")},
			steps: []step{allocErr(req("n/a", wantIPs("203.0.113.1")), ErrNotInAnyPool)},
		},
		{
			name:  "specific address not in the named pool",
			pools: []Pool{pool("a", "192.0.2.0/30"), pool("b", "198.51.100.0/30")},
			steps: []step{allocErr(req("n/a", wantIPs("192.0.2.1"), fromPool("b")), ErrInvalidRequest)},
		},
		{
			name:  "dual-stack addresses from two pools",
			pools: []Pool{pool("a", "192.0.2.0/30"), pool("b", "2001:db8::/120")},
			steps: []step{allocErr(req("n/a", families46(), wantIPs("192.0.2.1", "2001:db8::1")), ErrInvalidRequest)},
		},
		{
			name:  "one specific family, the other picked from the same pool",
			pools: []Pool{pool("d", "192.0.2.0/30", "2001:db8::/120")},
			steps: []step{allocate(req("n/a", fams(IPv6, IPv4), requireAll(), wantIPs("192.0.2.3")), "2001:db8::1", "192.0.2.3")},
		},
	})
}

// An IPv6 pool hands out the Subnet-Router anycast address of a /64 (zero
// interface identifier) only to a service that asks for it; the pool's
// total leaves it out until then, so free addresses are what Allocate
// gives.
func TestSubnetRouterAnycastIsSkipped(t *testing.T) {
	runScenarios(t, []scenario{
		{
			name:  "skipped by automatic allocation, given by name",
			pools: []Pool{pool("six", "2001:db8::/126")},
			steps: []step{
				usage("six", IPv6, 3, 0),
				allocate(req("n/a", fams(IPv6)), "2001:db8::1"),
				allocate(req("n/b", fams(IPv6), wantIPs("2001:db8::")), "2001:db8::"),
				usage("six", IPv6, 4, 2),
				release("n/b", "2001:db8::"),
				usage("six", IPv6, 3, 1),
				allocate(req("n/c", fams(IPv6)), "2001:db8::2"),
				allocate(req("n/d", fams(IPv6)), "2001:db8::3"),
				allocErr(req("n/e", fams(IPv6)), ErrPoolExhausted),
			},
		},
		{
			name:  "one per /64 the range touches",
			pools: []Pool{pool("wide", "2001:db8:0:1:ffff:ffff:ffff:fffe-2001:db8:0:2::1")},
			steps: []step{
				usage("wide", IPv6, 3, 0),
				allocate(req("n/a", fams(IPv6)), "2001:db8:0:1:ffff:ffff:ffff:fffe"),
				allocate(req("n/b", fams(IPv6)), "2001:db8:0:1:ffff:ffff:ffff:ffff"),
				allocate(req("n/c", fams(IPv6)), "2001:db8:0:2::1"),
			},
		},
		{
			name:  "a range starting past the /64's first address has none",
			pools: []Pool{pool("mid", "2001:db8::8/126")},
			steps: []step{usage("mid", IPv6, 4, 0), allocate(req("n/a", fams(IPv6)), "2001:db8::8")},
		},
	})
}

func TestDualStack(t *testing.T) {
	dual := pool("dual", "192.0.2.0/30", "2001:db8::/120")
	v4 := pool("v4", "198.51.100.0/30")
	v6 := pool("v6", "2001:db8:1::/120")
	runScenarios(t, []scenario{
		{
			name:  "both families from one pool, in the requested order",
			pools: []Pool{v4, dual},
			steps: []step{
				allocIn(req("n/a", fams(IPv6, IPv4), requireAll()), "dual", "2001:db8::1", "192.0.2.0"),
				allocIn(req("n/b", families46(), requireAll()), "dual", "192.0.2.1", "2001:db8::2"),
			},
		},
		{
			name:  "require: no single pool serves both",
			pools: []Pool{v4, v6},
			steps: []step{allocErr(req("n/a", families46(), requireAll()), ErrFamilyUnavailable)},
		},
		{
			name:  "prefer: falls back to the first family",
			pools: []Pool{v4, v6},
			steps: []step{
				allocIn(req("n/a", families46()), "v4", "198.51.100.0"),
				allocIn(req("n/b", fams(IPv6, IPv4)), "v6", "2001:db8:1::1"),
			},
		},
		{
			name:  "prefer: dual pool out of IPv6 addresses, fallback to IPv4",
			pools: []Pool{pool("dual", "192.0.2.0/30", "2001:db8::1/128")},
			steps: []step{
				allocate(req("n/a", families46()), "192.0.2.0", "2001:db8::1"),
				allocate(req("n/b", families46()), "192.0.2.1"),
				allocErr(req("n/c", families46(), requireAll()), ErrPoolExhausted),
			},
		},
		{
			name:  "prefer: grows to dual-stack when its pool gains IPv6, keeping IPv4",
			pools: []Pool{pool("p", "192.0.2.0/30")},
			steps: []step{
				allocate(req("n/a", families46()), "192.0.2.0"),
				allocate(req("n/a", families46()), "192.0.2.0"),
				setPools([]Pool{pool("p", "192.0.2.0/30", "2001:db8::/120")}),
				allocate(req("n/a", families46()), "192.0.2.0", "2001:db8::1"),
				allocate(req("n/a", families46()), "192.0.2.0", "2001:db8::1"),
			},
		},
		{
			name:  "dual-stack to single-stack keeps the first address",
			pools: []Pool{dual},
			steps: []step{
				allocate(req("n/x", families46()), "192.0.2.0", "2001:db8::1"),
				allocate(req("n/a", families46()), "192.0.2.1", "2001:db8::2"),
				allocate(req("n/a", fams(IPv4)), "192.0.2.1"),
				usage("dual", IPv6, 255, 1),
			},
		},
	})
}

func TestReleaseAndMove(t *testing.T) {
	runScenarios(t, []scenario{
		{
			name:  "release frees; lowest freed address is reused first",
			pools: []Pool{pool("a", "192.0.2.0/29")},
			steps: []step{
				allocate(req("n/a"), "192.0.2.0"),
				allocate(req("n/b"), "192.0.2.1"),
				allocate(req("n/c"), "192.0.2.2"),
				allocate(req("n/d"), "192.0.2.3"),
				release("n/c", "192.0.2.2"),
				release("n/b", "192.0.2.1"),
				release("n/b"),
				assigned("n/b"),
				allocate(req("n/e"), "192.0.2.1"),
				allocate(req("n/f"), "192.0.2.2"),
				allocate(req("n/g"), "192.0.2.4"),
			},
		},
		{
			name:  "idempotent allocate",
			pools: []Pool{pool("a", "192.0.2.0/30")},
			steps: []step{
				allocate(req("n/a"), "192.0.2.0"),
				allocate(req("n/a"), "192.0.2.0"),
				allocate(req("n/b"), "192.0.2.1"),
				allocate(req("n/a"), "192.0.2.0"),
				usage("a", IPv4, 4, 2),
			},
		},
		{
			name:  "changed specific address moves the service and frees the old one",
			pools: []Pool{pool("a", "192.0.2.0/30")},
			steps: []step{
				allocate(req("n/a"), "192.0.2.0"),
				allocate(req("n/a", wantIPs("192.0.2.3")), "192.0.2.3"),
				allocate(req("n/b"), "192.0.2.0"),
			},
		},
		{
			name:  "failed move leaves the old assignment intact",
			pools: []Pool{pool("a", "192.0.2.0/30"), pool("b", "198.51.100.0/32")},
			steps: []step{
				allocate(req("n/a"), "192.0.2.0"),
				allocate(req("n/b"), "192.0.2.1"),
				allocErr(req("n/a", wantIPs("192.0.2.1")), ErrAddressInUse),
				assigned("n/a", "192.0.2.0"),
				allocErr(req("n/a", fromPool("missing")), ErrUnknownPool),
				allocate(req("n/c"), "192.0.2.2"),
				allocate(req("n/d"), "192.0.2.3"),
				allocate(req("n/e"), "198.51.100.0"),
				allocErr(req("n/a", fromPool("b")), ErrPoolExhausted),
				assigned("n/a", "192.0.2.0"),
				usage("a", IPv4, 4, 4),
			},
		},
		{
			name:  "changed named pool moves the service",
			pools: []Pool{pool("a", "192.0.2.0/30"), pool("b", "198.51.100.0/30")},
			steps: []step{
				allocIn(req("n/a"), "a", "192.0.2.0"),
				allocIn(req("n/a", fromPool("b")), "b", "198.51.100.0"),
				allocate(req("n/a", fromPool("b")), "198.51.100.0"),
				usage("a", IPv4, 4, 0),
			},
		},
	})
}

func TestRestore(t *testing.T) {
	runScenarios(t, []scenario{
		{
			name:  "restore takes exact addresses; allocate then keeps them",
			pools: []Pool{pool("d", "192.0.2.0/30", "2001:db8::/120")},
			steps: []step{
				restore(req("n/a"), "192.0.2.2", "2001:db8::5"),
				allocate(req("n/a", families46()), "192.0.2.2", "2001:db8::5"),
				allocate(req("n/b"), "192.0.2.0"),
				allocate(req("n/c"), "192.0.2.1"),
				allocate(req("n/d"), "192.0.2.3"),
			},
		},
		{
			name:  "restore into a non-auto, scoped pool",
			pools: []Pool{with(pool("m", "192.0.2.0/30"), func(p *Pool) { p.AutoAssign = false; p.Namespaces = []string{"x"} })},
			steps: []step{restore(req("n/a"), "192.0.2.1")},
		},
		{
			name:  "restore of an address held by a service that does not share",
			pools: []Pool{pool("a", "192.0.2.0/30")},
			steps: []step{
				allocate(req("n/a"), "192.0.2.0"),
				restoreErr(req("n/b", key("k")), ErrAddressInUse, "192.0.2.0"),
				assigned("n/b"),
			},
		},
		{
			name:  "restore outside every pool keeps the address, restore of nothing fails",
			pools: []Pool{pool("a", "192.0.2.0/30")},
			steps: []step{
				restore(req("n/a"), "203.0.113.5"),
				usage("a", IPv4, 4, 0),
				restoreErr(req("n/a"), ErrInvalidRequest),
			},
		},
		{
			name:  "failed restore keeps the previous assignment",
			pools: []Pool{pool("a", "192.0.2.0/30")},
			steps: []step{
				allocate(req("n/a"), "192.0.2.0"),
				allocate(req("n/b"), "192.0.2.1"),
				restoreErr(req("n/a"), ErrAddressInUse, "192.0.2.1"),
				assigned("n/a", "192.0.2.0"),
			},
		},
	})
}

func TestPoolChanges(t *testing.T) {
	runScenarios(t, []scenario{
		{
			name:  "removed pool keeps assignments but gives no new ones",
			pools: []Pool{pool("old", "192.0.2.0/30"), pool("new", "198.51.100.0/30")},
			steps: []step{
				allocIn(req("n/a", fromPool("old")), "old", "192.0.2.0"),
				setPools([]Pool{pool("new", "198.51.100.0/30")}),
				allocIn(req("n/a", fromPool("old")), "old", "192.0.2.0"),
				allocErr(req("n/b", fromPool("old")), ErrUnknownPool),
				allocErr(req("n/b", wantIPs("192.0.2.1")), ErrNotInAnyPool),
				release("n/a", "192.0.2.0"),
				allocErr(req("n/a", fromPool("old")), ErrUnknownPool),
			},
		},
		{
			name:  "address held when a pool adds it is not handed out twice",
			pools: []Pool{pool("a", "192.0.2.0/31")},
			steps: []step{
				allocate(req("n/a"), "192.0.2.0"),
				setPools([]Pool{pool("b", "192.0.2.0/30")}),
				assigned("n/a", "192.0.2.0"),
				usage("b", IPv4, 4, 1),
				allocate(req("n/b"), "192.0.2.1"),
				release("n/a", "192.0.2.0"),
				allocate(req("n/c"), "192.0.2.0"),
			},
		},
		{
			name:  "narrowed scope and dropped pool name keep the assignment",
			pools: []Pool{pool("a", "192.0.2.0/30"), with(pool("m", "198.51.100.0/30"), func(p *Pool) { p.AutoAssign = false })},
			steps: []step{
				allocIn(req("n/a"), "a", "192.0.2.0"),
				allocIn(req("n/b", fromPool("m")), "m", "198.51.100.0"),
				setPools([]Pool{
					with(pool("a", "192.0.2.0/30"), func(p *Pool) { p.Namespaces = []string{"other"} }),
					with(pool("m", "198.51.100.0/30"), func(p *Pool) { p.AutoAssign = false }),
				}),
				allocIn(req("n/a"), "a", "192.0.2.0"),
				allocIn(req("n/b"), "m", "198.51.100.0"),
				allocErr(req("n/c"), ErrFamilyUnavailable),
			},
		},
		{
			name:  "renamed pool: assignment follows the address",
			pools: []Pool{pool("a", "192.0.2.0/30")},
			steps: []step{
				allocIn(req("n/a"), "a", "192.0.2.0"),
				setPools([]Pool{pool("b", "192.0.2.0/30")}),
				allocIn(req("n/a"), "b", "192.0.2.0"),
			},
		},
		{
			name:  "overlapping pools: the earlier in the list keeps the overlap whatever the names",
			pools: []Pool{pool("tiny", "192.0.2.4/30")},
			steps: []step{
				allocIn(req("n/1", fromPool("tiny")), "tiny", "192.0.2.4"),
				setPools([]Pool{pool("tiny", "192.0.2.4/30"), pool("aaa", "192.0.2.0/29")}, "tiny>aaa:192.0.2.4/30"),
				usage("tiny", IPv4, 4, 1),
				usage("aaa", IPv4, 4, 0),
				allocIn(req("n/2", fromPool("tiny")), "tiny", "192.0.2.5"),
				assigned("n/1", "192.0.2.4"),
			},
		},
		{
			name:  "overlapping pools: reported, the later in the list skips the overlap",
			pools: nil,
			steps: []step{
				setPools([]Pool{
					with(pool("a", "192.0.2.4/30"), func(p *Pool) { p.Priority = 2 }),
					with(pool("b", "192.0.2.0/29"), func(p *Pool) { p.Priority = 1 }),
				}, "a>b:192.0.2.4/30"),
				allocIn(req("n/1"), "b", "192.0.2.0"),
				allocate(req("n/2"), "192.0.2.1"),
				allocate(req("n/3"), "192.0.2.2"),
				allocate(req("n/4"), "192.0.2.3"),
				allocIn(req("n/5"), "a", "192.0.2.4"),
				allocErr(req("n/6", fromPool("b")), ErrPoolExhausted),
				allocIn(req("n/7", wantIPs("192.0.2.5")), "a", "192.0.2.5"),
				usage("b", IPv4, 4, 4),
				usage("a", IPv4, 4, 2),
			},
		},
		{
			name:  "invalid configuration changes nothing",
			pools: []Pool{pool("a", "192.0.2.0/30")},
			steps: []step{
				setPoolsErr([]Pool{pool("a", "192.0.2.0/30"), pool("a", "198.51.100.0/30")}, ErrInvalidPool),
				setPoolsErr([]Pool{{Name: "x", AutoAssign: true}}, ErrInvalidPool),
				setPoolsErr([]Pool{pool("", "192.0.2.0/30")}, ErrInvalidPool),
				setPoolsErr([]Pool{{Name: "x", Ranges: []Range{{First: addrs("192.0.2.9")[0], Last: addrs("192.0.2.1")[0]}}}}, ErrInvalidRange),
				allocIn(req("n/a"), "a", "192.0.2.0"),
			},
		},
	})
}

func TestNewValidates(t *testing.T) {
	_, err := New([]Pool{pool("a", "192.0.2.0/30"), pool("a", "198.51.100.0/30")})
	if !errors.Is(err, ErrInvalidPool) {
		t.Fatalf("duplicate names: %v", err)
	}
	_, err = New([]Pool{with(pool("s", "192.0.2.0/30"), func(p *Pool) { p.ServiceSelectors = []labelsSelector{nil} })})
	if !errors.Is(err, ErrInvalidPool) {
		t.Fatalf("nil selector: %v", err)
	}
}

// Addresses kept after their pool went or shrank are counted by Outside,
// listed in their service's Assignment, and counted in no pool.
func TestAddressesOutsideEveryPool(t *testing.T) {
	a, err := New([]Pool{pool("a", "192.0.2.0/30"), pool("b", "198.51.100.0/30")})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Request{req("n/x", fromPool("a")), req("n/y", fromPool("b")), req("n/z", fromPool("b"))} {
		if _, err := a.Allocate(r); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.Outside(); got[IPv4] != 0 || got[IPv6] != 0 {
		t.Fatalf("Outside = %v before any change", got)
	}
	// a is gone; b keeps z's address, not y's.
	if _, err := a.SetPools([]Pool{pool("b", "198.51.100.1/32")}); err != nil {
		t.Fatal(err)
	}
	if got := a.Outside(); got[IPv4] != 2 || got[IPv6] != 0 {
		t.Errorf("Outside = %v, want 2 IPv4 addresses", got)
	}
	if u := a.Usage(); len(u) != 1 || u[0].Families[0] != (FamilyUsage{Family: IPv4, Total: 1, InUse: 1}) {
		t.Errorf("usage = %+v, want pool b with its one address in use", u)
	}
	x, _ := a.Assigned("n/x")
	if x.Pool != "a" || !slices.Equal(x.IPs, addrs("192.0.2.0")) || !slices.Equal(x.Outside, x.IPs) {
		t.Errorf("n/x holds %+v, want its address, outside, and the name of its old pool", x)
	}
	// Asking again keeps it: pools changing never renumber a Service.
	if again, err := a.Allocate(req("n/x", fromPool("a"))); err != nil || !slices.Equal(again.IPs, x.IPs) {
		t.Errorf("n/x after its pool went: %+v, %v", again, err)
	}
	if z, _ := a.Assigned("n/z"); len(z.Outside) != 0 {
		t.Errorf("n/z = %+v, want nothing outside", z)
	}
	a.Release("n/x")
	a.Release("n/y")
	if got := a.Outside(); got[IPv4] != 0 {
		t.Errorf("Outside = %v after the release", got)
	}
}

// A restart with a pool gone or shrunk restores the addresses Services
// show all the same, under the pool they recorded.
func TestRestoreKeepsAddressesOutsideEveryPool(t *testing.T) {
	runScenarios(t, []scenario{{
		name:  "restored outside every pool, kept on allocation",
		pools: []Pool{pool("b", "198.51.100.0/30")},
		steps: []step{
			restore(req("n/x", fromPool("gone")), "192.0.2.7"),
			assigned("n/x", "192.0.2.7"),
			allocIn(req("n/x", fromPool("gone")), "gone", "192.0.2.7"),
			restore(req("n/y"), "198.51.100.1"),
			allocIn(req("n/y"), "b", "198.51.100.1"),
			restoreErr(req("n/z"), ErrAddressInUse, "192.0.2.7"),
		},
	}})
}
