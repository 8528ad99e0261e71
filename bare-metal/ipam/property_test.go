package ipam

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"testing"
)

// TestRandomOperations drives the allocator with a seeded random sequence
// and checks its internal invariants after every step, plus that a named
// pool reported exhausted really has no free address.
func TestRandomOperations(t *testing.T) {
	configs := [][]Pool{
		{
			pool("p1", "192.0.2.0/29", "2001:db8::/125"),
			with(pool("p2", "198.51.100.254-198.51.101.1"), func(p *Pool) { p.AvoidBuggyIPs = true; p.Priority = 1 }),
			with(pool("p3", "2001:db8:1::/126"), func(p *Pool) { p.Namespaces = []string{"a"}; p.Priority = -1 }),
		},
		{
			pool("p1", "192.0.2.4/30", "2001:db8::/126"),
			with(pool("p0", "192.0.2.0/29"), func(p *Pool) { p.AutoAssign = false }),
			pool("p3", "2001:db8:1::/127", "198.51.100.255/32"),
		},
	}
	universe := addrs("192.0.2.0", "192.0.2.3", "192.0.2.6", "198.51.100.255", "198.51.101.0",
		"198.51.101.1", "2001:db8::2", "2001:db8:1::1", "203.0.113.1")
	for seed := uint64(1); seed <= 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		a, err := New(configs[0])
		if err != nil {
			t.Fatal(err)
		}
		for i := range 400 {
			what := randomStep(t, a, rng, configs, universe)
			if err := checkInvariants(a); err != nil {
				t.Fatalf("seed %d step %d (%s): %v", seed, i, what, err)
			}
		}
	}
}

func randomStep(t *testing.T, a *Allocator, rng *rand.Rand, configs [][]Pool, universe []netip.Addr) string {
	svc := fmt.Sprintf("%s/s%d", []string{"a", "b"}[rng.IntN(2)], rng.IntN(25))
	switch n := rng.IntN(20); {
	case n == 0:
		_, err := a.SetPools(configs[rng.IntN(len(configs))])
		if err != nil {
			t.Fatal(err)
		}
		return "set pools"
	case n < 4:
		a.Release(svc)
		return "release " + svc
	case n < 6:
		before, _ := a.Assigned(svc)
		ips := []netip.Addr{universe[rng.IntN(len(universe))]}
		if _, err := a.Restore(randomRequest(svc, rng, universe), ips); err != nil {
			if after, _ := a.Assigned(svc); !slices.Equal(after.IPs, before.IPs) {
				t.Fatalf("failed restore changed %s: %v -> %v", svc, before, after)
			}
		}
		return fmt.Sprintf("restore %s %v", svc, ips)
	}
	r := randomRequest(svc, rng, universe)
	checkAllocate(t, a, r)
	return fmt.Sprintf("allocate %+v", r)
}

func randomRequest(svc string, rng *rand.Rand, universe []netip.Addr) Request {
	r := req(svc)
	r.Families = [][]Family{{IPv4}, {IPv6}, {IPv4, IPv6}, {IPv6, IPv4}}[rng.IntN(4)]
	r.RequireAllFamilies = rng.IntN(2) == 0
	r.SharingKey = []string{"", "k1", "k2"}[rng.IntN(3)]
	for _, p := range []Port{{"TCP", 80}, {"TCP", 443}, {"UDP", 53}} {
		if rng.IntN(2) == 0 {
			r.Ports = append(r.Ports, p)
		}
	}
	r.LocalTrafficPolicy = rng.IntN(3) == 0
	r.BackendKey = []string{"b1", "b2"}[rng.IntN(2)]
	r.Pool = []string{"", "", "p1", "p2", "p3", "nope"}[rng.IntN(6)]
	if rng.IntN(5) == 0 {
		ip := universe[rng.IntN(len(universe))]
		r.IPs = []netip.Addr{ip}
		if !slices.Contains(r.Families, FamilyOf(ip)) {
			r.Families = []Family{FamilyOf(ip)}
		}
	}
	return r
}

func checkAllocate(t *testing.T, a *Allocator, r Request) {
	t.Helper()
	before, _ := a.Assigned(r.Service)
	got, err := a.Allocate(r)
	if err != nil {
		if after, _ := a.Assigned(r.Service); !slices.Equal(after.IPs, before.IPs) || after.Pool != before.Pool {
			t.Fatalf("failed allocate changed %s: %v -> %v (%v)", r.Service, before, after, err)
		}
		if errors.Is(err, ErrPoolExhausted) && r.Pool != "" && r.SharingKey == "" && len(r.IPs) == 0 && len(r.Families) == 1 {
			if free, ok := bruteFree(a, r.Pool, r.Families[0]); ok {
				t.Fatalf("%s: %v, but %s is free", r.Service, err, free)
			}
		}
		return
	}
	if again, err := a.Allocate(r); err != nil || !slices.Equal(again.IPs, got.IPs) {
		t.Fatalf("allocate not idempotent for %+v: %v then %v, %v", r, got, again, err)
	}
	want := r.Families
	if len(got.IPs) != len(want) {
		want = want[:1]
		if len(r.IPs) > 0 {
			want = []Family{FamilyOf(r.IPs[0])}
		}
	}
	for i, ip := range got.IPs {
		if i >= len(want) || FamilyOf(ip) != want[i] {
			t.Fatalf("%+v got %v: families do not follow the request", r, got)
		}
	}
	for _, ip := range r.IPs {
		if !slices.Contains(got.IPs, ip) {
			t.Fatalf("%+v got %v: requested address missing", r, got)
		}
	}
}

// bruteFree enumerates a small pool for a free address of family f.
func bruteFree(a *Allocator, name string, f Family) (netip.Addr, bool) {
	p := a.ps.byName[name]
	if p == nil {
		return netip.Addr{}, false
	}
	for _, rs := range p.ranges {
		if rs.r.Family() != f {
			continue
		}
		for ip := rs.r.First; rs.r.Contains(ip); ip = ip.Next() {
			if a.ps.owner(ip) == rs && !a.isUsed(ip) && !rs.skips(ip) {
				return ip, true
			}
		}
	}
	return netip.Addr{}, false
}

func checkInvariants(a *Allocator) error {
	for svc, al := range a.allocs {
		if al.service != svc || len(al.ips) == 0 || len(al.ips) > 2 ||
			(len(al.ips) == 2 && FamilyOf(al.ips[0]) == FamilyOf(al.ips[1])) {
			return fmt.Errorf("bad alloc %s: %+v", svc, al)
		}
		for _, ip := range al.ips {
			if st := a.used[ip]; st == nil || !slices.Contains(st.holders, al) {
				return fmt.Errorf("%s holds %s but the address does not list it", svc, ip)
			}
		}
	}
	var inUse = map[*poolState][2]uint64{}
	keyed := 0
	for ip, st := range a.used {
		if len(st.holders) == 0 {
			return fmt.Errorf("%s used without holders", ip)
		}
		if st.owner != a.ps.owner(ip) {
			return fmt.Errorf("%s: stale owner", ip)
		}
		if st.owner != nil {
			c := inUse[st.owner.pool]
			c[famIndex(FamilyOf(ip))]++
			inUse[st.owner.pool] = c
		}
		for i, h := range st.holders {
			if a.allocs[h.service] != h {
				return fmt.Errorf("%s lists stale holder %s", ip, h.service)
			}
			if i > 0 && (h.key == "" || h.key != st.holders[0].key) {
				return fmt.Errorf("%s shared without a common key: %v", ip, st.holders)
			}
			for _, o := range st.holders[:i] {
				if (h.local || o.local) && h.backend != o.backend {
					return fmt.Errorf("%s: %s and %s share with Local policy and other backends", ip, h.service, o.service)
				}
			}
			if clash := portClash(st.holders, h); clash != "" {
				return fmt.Errorf("%s: %s: %s", ip, h.service, clash)
			}
		}
		if k := st.holders[0].key; k != "" {
			keyed++
			if _, ok := a.byKey[k][ip]; !ok {
				return fmt.Errorf("%s missing from key index %q", ip, k)
			}
		}
	}
	for ip := range a.reserved {
		if _, used := a.used[ip]; used {
			continue
		}
		if rs := a.ps.owner(ip); rs != nil {
			c := inUse[rs.pool]
			c[famIndex(FamilyOf(ip))]++
			inUse[rs.pool] = c
		}
	}
	n := 0
	for _, m := range a.byKey {
		n += len(m)
	}
	if n != keyed {
		return fmt.Errorf("key index has %d addresses, want %d", n, keyed)
	}
	for _, p := range a.ps.ordered {
		if p.inUse != inUse[p] {
			return fmt.Errorf("pool %s in use %v, counted %v", p.cfg.Name, p.inUse, inUse[p])
		}
	}
	return nil
}

func TestConcurrentUse(t *testing.T) {
	a, err := New([]Pool{pool("a", "192.0.2.0/24", "2001:db8::/64")})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				svc := fmt.Sprintf("g%d/s%d", g, i%20)
				if _, err := a.Allocate(req(svc, families46(), key("k"), ports(fmt.Sprintf("TCP/%d", 1000*g+i%20)))); err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					a.Release(svc)
				}
				a.Usage()
			}
		})
	}
	wg.Wait()
	if err := checkInvariants(a); err != nil {
		t.Fatal(err)
	}
}

func TestHugeRanges(t *testing.T) {
	a, err := New([]Pool{pool("big", "2001:db8::/64", "10.0.0.0/8"), pool("zz-all6", "::/0"), pool("twin", "2001:db8::/64")})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		if _, err := a.Allocate(req(fmt.Sprintf("n/s%d", i), fams(IPv6, IPv4), requireAll())); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := a.Assigned("n/s999")
	if want := addrs("2001:db8::3e8", "10.0.3.231"); !slices.Equal(got.IPs, want) { // 2001:db8:: is skipped
		t.Fatalf("got %v, want %v", got.IPs, want)
	}
	want := []PoolUsage{
		{Name: "big", Families: []FamilyUsage{{IPv4, 1 << 24, 1000}, {IPv6, ^uint64(0), 1000}}},
		{Name: "twin", Families: []FamilyUsage{{IPv6, 0, 0}}}, // entirely shadowed by big
		{Name: "zz-all6", Families: []FamilyUsage{{IPv6, ^uint64(0), 0}}},
	}
	if u := a.Usage(); !reflect.DeepEqual(u, want) {
		t.Fatalf("usage %+v, want %+v", u, want)
	}
}
