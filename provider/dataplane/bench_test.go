package dataplane

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

// scaleCluster makes n ClusterIP Services with three endpoints each; every
// tenth is a LoadBalancer (NodePort + LB IP) so that every map is exercised.
func scaleCluster(n int) ([]*v1.Service, []*discoveryv1.EndpointSlice) {
	svcs := make([]*v1.Service, 0, n)
	sl := make([]*discoveryv1.EndpointSlice, 0, n)
	for i := range n {
		name := fmt.Sprintf("s%05d", i)
		// IPv6 documentation space holds any number of test addresses
		mods := []svcMod{clusterIPs(fmt.Sprintf("2001:db8:1::%x", i+1)), ports(tcp80)}
		if i%10 == 0 {
			mods = append(mods, ports(port("http", v1.ProtocolTCP, 80, int32(30000+i%2700))),
				lbIngress(fmt.Sprintf("2001:db8:2::%x", i+1)))
		}
		svcs = append(svcs, service(name, mods...))
		sl = append(sl, scaleSlice(name, i, 3))
	}
	return svcs, sl
}

// compactCluster is scaleCluster as the agent's cache holds it.
func compactCluster(n int) ([]*Service, []*EndpointSlice) {
	svcs, sl := scaleCluster(n)
	return servicesFrom(svcs), slicesFrom(sl)
}

func scaleSlice(name string, i, n int) *discoveryv1.EndpointSlice {
	var eps []ep
	for j := range n {
		node := otherNode
		if j == 0 {
			node = thisNode
		}
		eps = append(eps, ep{fmt.Sprintf("2001:db8:3:%x::%x", i, j+1), node, ready})
	}
	return endpointSlice(name, name+"-1", v6, httpPorts, eps...)
}

// renderNFT stands in for the real nft binary: Run renders the transaction
// text that knftables would pipe to "nft -f -", and keeps nothing. The fake's
// element store is a linear list, so at 10k Services the fake, not herald,
// would dominate the measurement.
type renderNFT struct {
	knftables.Interface
	bytes int
}

func (r *renderNFT) Run(_ context.Context, tx *knftables.Transaction) error {
	r.bytes = len(tx.String())
	return nil
}

func (r *renderNFT) ListAll(context.Context) (map[string][]string, error) {
	return map[string][]string{}, nil
}

func newRender() *renderNFT {
	return &renderNFT{Interface: knftables.NewFake(TableFamily, TableName)}
}

func BenchmarkBuild(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		svcs, sl := scaleCluster(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Build(svcs, sl, testNode, Options{})
			}
		})
		// what the agent's first sync builds, from its cache's objects
		csvcs, csl := servicesFrom(svcs), slicesFrom(sl)
		b.Run(fmt.Sprintf("builder-cold/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				NewBuilder().Build(csvcs, csl, testNode, Options{})
			}
		})
	}
}

// BenchmarkFullSync is Build plus a full sync: into knftables.Fake at 1k,
// and rendered to nft text (what the real applier sends) at 1k and 10k.
func BenchmarkFullSync(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{1000, 10000} {
		svcs, sl := scaleCluster(n)
		if n <= 1000 {
			b.Run(fmt.Sprintf("fake/%d", n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := NewApplier(knftables.NewFake(TableFamily, TableName)).Sync(ctx, Build(svcs, sl, testNode, Options{})); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		b.Run(fmt.Sprintf("render/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			nft := newRender()
			for b.Loop() {
				if _, err := NewApplier(nft).Sync(ctx, Build(svcs, sl, testNode, Options{})); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(nft.bytes), "tx-bytes")
		})
	}
}

// BenchmarkIncremental changes one Service's endpoints among 10k and runs
// Build plus the partial sync, alternating between two states.
func BenchmarkIncremental(b *testing.B) {
	ctx := context.Background()
	svcs, sl := compactCluster(10000)
	states := [2][]*EndpointSlice{sl, append([]*EndpointSlice(nil), sl...)}
	states[1][4242] = EndpointSliceFrom(scaleSlice(svcs[4242].Name, 4242, 4))
	for _, kind := range []string{"fake", "render"} {
		b.Run(kind+"/10000", func(b *testing.B) {
			var nft knftables.Interface = newRender()
			if kind == "fake" {
				nft = knftables.NewFake(TableFamily, TableName)
			}
			a := NewApplier(nft)
			if _, err := a.Sync(ctx, build(svcs, sl, testNode, Options{})); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 0
			ops := 0
			for b.Loop() {
				i++
				res, err := a.Sync(ctx, build(svcs, states[i%2], testNode, Options{}))
				if err != nil || res.Full {
					b.Fatalf("sync: %v full=%t", err, res.Full)
				}
				ops = res.Operations
			}
			b.ReportMetric(float64(ops), "ops")
		})
	}
}

// BenchmarkBuilderIncremental is BenchmarkIncremental with the agent's
// incremental Builder: only the changed Service is rebuilt and diffed.
func BenchmarkBuilderIncremental(b *testing.B) {
	ctx := context.Background()
	svcs, sl := compactCluster(10000)
	states := [2][]*EndpointSlice{sl, append([]*EndpointSlice(nil), sl...)}
	states[1][4242] = EndpointSliceFrom(scaleSlice(svcs[4242].Name, 4242, 4))
	bld := NewBuilder()
	a := NewApplier(newRender())
	if _, err := a.Sync(ctx, bld.Build(svcs, sl, testNode, Options{})); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if res, err := a.Sync(ctx, bld.Build(svcs, states[i%2], testNode, Options{})); err != nil || res.Full {
			b.Fatalf("sync: %v full=%t", err, res.Full)
		}
	}
}

// BenchmarkBuilderRetained reports the heap a Builder keeps between syncs at
// 10k Services (its per-Service shares, owners and element maps, the last
// Ruleset), the data plane's part of the agent's resident memory.
func BenchmarkBuilderRetained(b *testing.B) {
	svcs, sl := compactCluster(10000)
	var retained uint64
	for b.Loop() {
		before := heapInUse()
		bld := NewBuilder()
		r := bld.Build(svcs, sl, testNode, Options{})
		retained = heapInUse() - before
		runtime.KeepAlive(bld)
		runtime.KeepAlive(r)
	}
	b.ReportMetric(float64(retained)/(1<<20), "retained-MiB")
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
