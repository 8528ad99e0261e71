package dataplane

import (
	"context"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The BenchmarkReal* benchmarks drive the real nft binary against the
// kernel, each in a network namespace of its own (see inNetns) so that they
// never touch the host's ruleset. Like every benchmark they run only with
// -bench (make bench), never in make test; the tests against the kernel are
// in apply_kernel_test.go and reload_kernel_test.go.

// benchRealFullSync is what a full sync costs the agent: Build of n Services
// with three endpoints each, plus one atomic transaction through nft that
// recreates the table (it already exists after the first iteration, as in a
// periodic resync).
//
// Through nft, every full sync parses all elements. With reload (the agent's
// setting), the first sync goes through nft and the others, the periodic
// resyncs, rewrite elements over netlink.
func benchRealFullSync(b *testing.B, n int, reload bool) {
	ctx := context.Background()
	svcs, sl := scaleCluster(n)
	opts := []ApplierOption{BatchElements()}
	nft := inNetns(b)
	if reload {
		opts = append(opts, ReloadElements(NewNetlinkReloader(threadNetns(b))))
	}
	a := NewApplier(nft, opts...)
	if reload {
		if _, err := a.SyncFull(ctx, Build(svcs, sl, testNode, Options{})); err != nil {
			b.Fatal(err)
		}
	}
	var t phaseTimer
	b.ReportAllocs()
	for b.Loop() {
		r := t.build(func() *Ruleset { return Build(svcs, sl, testNode, Options{}) })
		res, err := t.sync(func() (SyncResult, error) { return a.SyncFull(ctx, r) })
		if err != nil {
			b.Fatal(err)
		}
		if res.Reloaded != reload {
			b.Fatalf("full sync reloaded=%t, want %t", res.Reloaded, reload)
		}
	}
	t.report(b)
}

// phaseTimer splits a benchmark's wall time between building and syncing
// (the latter is mostly nft), reported as build-ms/op and sync-ms/op. On a
// shared machine wall time mostly measures waiting for a CPU, so it also
// reports CPU time: go-cpu-ms/op for this process (GC included) and
// nft-cpu-ms/op for the nft processes it ran, and sync-cpu-ms/op for the
// syncs' own thread: kernel/netlink apply is done in the sending thread
// (benchmarks in a netns run locked to one), and thread CPU time does not
// count the time spent waiting for a CPU.
type phaseTimer struct {
	building, syncing time.Duration
	syncCPU           time.Duration
	n                 int
	self, children    time.Duration
	started           bool
}

func cpuTime(who int) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (t *phaseTimer) start() {
	if !t.started {
		t.started = true
		t.self, t.children = -cpuTime(unix.RUSAGE_SELF), -cpuTime(unix.RUSAGE_CHILDREN)
	}
}

func (t *phaseTimer) build(f func() *Ruleset) *Ruleset {
	t.start()
	start := time.Now()
	r := f()
	t.building += time.Since(start)
	return r
}

func (t *phaseTimer) sync(f func() (SyncResult, error)) (SyncResult, error) {
	start, cpu := time.Now(), cpuTime(unix.RUSAGE_THREAD)
	res, err := f()
	t.syncing += time.Since(start)
	t.syncCPU += cpuTime(unix.RUSAGE_THREAD) - cpu
	t.n++
	return res, err
}

func (t *phaseTimer) report(b *testing.B) {
	if t.n == 0 {
		return
	}
	self, children := t.self+cpuTime(unix.RUSAGE_SELF), t.children+cpuTime(unix.RUSAGE_CHILDREN)
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(t.n) }
	b.ReportMetric(per(t.building), "build-ms/op")
	b.ReportMetric(per(t.syncing), "sync-ms/op")
	b.ReportMetric(per(t.syncCPU), "sync-cpu-ms/op")
	b.ReportMetric(per(self), "go-cpu-ms/op")
	b.ReportMetric(per(children), "nft-cpu-ms/op")
}

func BenchmarkRealFullSync1k(b *testing.B)  { benchRealFullSync(b, 1000, true) }
func BenchmarkRealFullSync10k(b *testing.B) { benchRealFullSync(b, 10000, true) }
func BenchmarkRealFullSync30k(b *testing.B) { benchRealFullSync(b, 30000, true) }

// The same through nft only: what the first sync after a start costs, and
// every full sync that needs new chains or rules.
func BenchmarkRealFullSyncNFT1k(b *testing.B)  { benchRealFullSync(b, 1000, false) }
func BenchmarkRealFullSyncNFT10k(b *testing.B) { benchRealFullSync(b, 10000, false) }
func BenchmarkRealFullSyncNFT30k(b *testing.B) { benchRealFullSync(b, 30000, false) }

// BenchmarkRealFirstSync10k is an agent's first sync on a node without
// the table (after boot): one netlink batch writes skeleton and elements.
// Deleting the previous iteration's table is not in build-ms or sync-ms.
func BenchmarkRealFirstSync10k(b *testing.B) {
	ctx := context.Background()
	svcs, sl := scaleCluster(10000)
	nft := inNetns(b)
	reloader := NewNetlinkReloader(threadNetns(b))
	var t phaseTimer
	for b.Loop() {
		if err := DeleteTable(ctx, nft); err != nil {
			b.Fatal(err)
		}
		a := NewApplier(nft, BatchElements(), ReloadElements(reloader))
		r := t.build(func() *Ruleset { return Build(svcs, sl, testNode, Options{}) })
		res, err := t.sync(func() (SyncResult, error) { return a.Sync(ctx, r) })
		if err != nil || !res.Rewritten {
			b.Fatalf("first sync: %+v, %v; want it to write the table over netlink", res, err)
		}
	}
	t.report(b)
}

// BenchmarkRealPartialSyncOneService* is one Service among 1k or 10k going
// from three endpoints to four and back: a Builder's Build (as the agent
// does) plus a partial sync, over netlink as the agent does it. sync-ms
// is the apply alone; it must not grow with the Services around the one
// that changed (see the kernel's table validation in doc.go), so 1k and
// 10k should read alike.
func BenchmarkRealPartialSyncOneService1k(b *testing.B) {
	benchRealOneService(b, oneServiceChange{services: 1000, endpoints: 4, netlink: true})
}

func BenchmarkRealPartialSyncOneService10k(b *testing.B) {
	benchRealOneService(b, oneServiceChange{endpoints: 4, netlink: true})
}

// The same through nft, as without ReloadElements.
func BenchmarkRealPartialSyncNFTOneService10k(b *testing.B) {
	benchRealOneService(b, oneServiceChange{endpoints: 4})
}

// oneServiceChange is what benchRealOneService does: one Service of
// services (default 10k) goes from three endpoints to this many and back,
// each step a Builder's Build (as the agent does) and a sync, over netlink
// or through nft only, partial or (full) a full sync.
type oneServiceChange struct {
	services, endpoints int
	netlink, full       bool
}

func benchRealOneService(b *testing.B, c oneServiceChange) {
	n := c.services
	if n == 0 {
		n = 10000
	}
	ctx := context.Background()
	svcs, sl := compactCluster(n)
	states := [2][]*EndpointSlice{sl, append([]*EndpointSlice(nil), sl...)}
	one := n * 42 / 100
	states[1][one] = EndpointSliceFrom(scaleSlice(svcs[one].Name, one, c.endpoints))
	opts := []ApplierOption{BatchElements()}
	nft := inNetns(b)
	if c.netlink {
		opts = append(opts, ReloadElements(NewNetlinkReloader(threadNetns(b))))
	}
	a := NewApplier(nft, opts...)
	bld := NewBuilder()
	if _, err := a.Sync(ctx, bld.Build(svcs, sl, testNode, Options{})); err != nil {
		b.Fatal(err)
	}
	var t phaseTimer
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		r := t.build(func() *Ruleset { return bld.Build(svcs, states[i%2], testNode, Options{}) })
		// Collect the Build's garbage here, untimed: otherwise the sync
		// pays for it in GC assists, in proportion to the heap, and
		// sync-cpu-ms would grow with the Services for the Build's sake.
		runtime.GC()
		res, err := t.sync(func() (SyncResult, error) {
			if c.full {
				return a.SyncFull(ctx, r)
			}
			return a.Sync(ctx, r)
		})
		if err != nil || res.Full != c.full || c.full && c.netlink && !res.Rewritten {
			b.Fatalf("sync: %+v, %v; want full=%t, over netlink=%t", res, err, c.full, c.netlink)
		}
	}
	t.report(b)
}

// BenchmarkRealFullSyncTampered10k is a periodic resync that finds a rule
// added behind herald's back: the table is rewritten over netlink. Adding
// the rule (through nft) is in neither build-ms nor sync-ms.
func BenchmarkRealFullSyncTampered10k(b *testing.B) {
	ctx := context.Background()
	svcs, sl := scaleCluster(10000)
	nft := inNetns(b)
	a := NewApplier(nft, BatchElements(), ReloadElements(NewNetlinkReloader(threadNetns(b))))
	if _, err := a.SyncFull(ctx, Build(svcs, sl, testNode, Options{})); err != nil {
		b.Fatal(err)
	}
	var t phaseTimer
	for b.Loop() {
		if out, err := exec.Command("nft", "add rule inet herald services counter").CombinedOutput(); err != nil {
			b.Fatalf("tamper: %v: %s", err, out)
		}
		r := t.build(func() *Ruleset { return Build(svcs, sl, testNode, Options{}) })
		res, err := t.sync(func() (SyncResult, error) { return a.SyncFull(ctx, r) })
		if err != nil || !res.Rewritten {
			b.Fatalf("full sync of a tampered table: %+v, %v; want it rewritten over netlink", res, err)
		}
	}
	t.report(b)
}

// BenchmarkRealFullSyncNewSkeleton10k is a full sync whose skeleton is not
// the table's (a restarted agent finds one Service grown past the
// precreated pick chains, or back): the table is rewritten over netlink.
func BenchmarkRealFullSyncNewSkeleton10k(b *testing.B) {
	benchRealOneService(b, oneServiceChange{endpoints: PrecreatedPickChains + 1, netlink: true, full: true})
}

// BenchmarkRealPartialSyncNewChain10k is one Service among 10k growing past
// the precreated pick chains (3 to PrecreatedPickChains+1 endpoints) and
// back: a partial sync that adds (or deletes) a pick chain over netlink in
// the batch of its element changes.
func BenchmarkRealPartialSyncNewChain10k(b *testing.B) {
	benchRealOneService(b, oneServiceChange{endpoints: PrecreatedPickChains + 1, netlink: true})
}

// BenchmarkRealSkeletonNFT is the skeleton alone through nft, without and
// with local-traffic detection, which adds the pick chains for pods
// reaching externalTrafficPolicy Local frontends (PrecreatedPickChains per
// family and kind): their cost in every full sync through nft.
func BenchmarkRealSkeletonNFT(b *testing.B) {
	for _, c := range []struct {
		name  string
		local LocalDetector
	}{
		{"none", LocalDetector{}},
		{"interface", LocalDetector{Interface: "veth", InterfacePrefix: true}},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			a := NewApplier(inNetns(b), BatchElements())
			var t phaseTimer
			for b.Loop() {
				r := t.build(func() *Ruleset { return Build(nil, nil, testNode, Options{Local: c.local}) })
				if _, err := t.sync(func() (SyncResult, error) { return a.SyncFull(ctx, r) }); err != nil {
					b.Fatal(err)
				}
			}
			t.report(b)
		})
	}
}
