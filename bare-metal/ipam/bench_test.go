package ipam

import (
	"fmt"
	"testing"
)

// benchPools: a small preferred pool, a buggy-avoiding one, and a large
// dual-stack one with an IPv6 /64 that must never be enumerated.
func benchPools() []Pool {
	return []Pool{
		with(pool("a", "198.18.0.0/22"), func(p *Pool) { p.Priority = 0 }),
		with(pool("b", "198.18.16.0/22"), func(p *Pool) { p.Priority = 1; p.AvoidBuggyIPs = true }),
		with(pool("c", "198.19.0.0/16", "2001:db8::/64"), func(p *Pool) { p.Priority = 2 }),
	}
}

// benchRequest mixes plain IPv4, PreferDualStack and groups of four
// services sharing an address.
func benchRequest(i int) Request {
	r := req(fmt.Sprintf("ns%d/svc%d", i%50, i), ports("TCP/80"))
	switch i % 10 {
	case 0:
		r.Families = []Family{IPv4, IPv6}
	case 1:
		r.SharingKey = fmt.Sprintf("share-%d", i/40)
		r.Ports = []Port{{Protocol: "TCP", Port: int32(8000 + i%40)}}
	}
	return r
}

func BenchmarkAllocate10k(b *testing.B) {
	const n = 10_000
	reqs := make([]Request, n)
	for i := range reqs {
		reqs[i] = benchRequest(i)
	}
	b.ReportAllocs()
	for b.Loop() {
		a, err := New(benchPools())
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range reqs {
			if _, err := a.Allocate(r); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/service")
}

// BenchmarkChurnAt10k replaces one service of 10k per op: release, then
// allocate a new one, which takes the lowest freed address.
func BenchmarkChurnAt10k(b *testing.B) {
	const n = 10_000
	a, err := New(benchPools())
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		if _, err := a.Allocate(benchRequest(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		a.Release(benchRequest(i).Service)
		if _, err := a.Allocate(benchRequest(i + n)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkReallocateIdempotent10k(b *testing.B) {
	const n = 10_000
	a, err := New(benchPools())
	if err != nil {
		b.Fatal(err)
	}
	reqs := make([]Request, n)
	for i := range reqs {
		reqs[i] = benchRequest(i)
		if _, err := a.Allocate(reqs[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := a.Allocate(reqs[i%n]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
