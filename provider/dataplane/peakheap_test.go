package dataplane

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"testing"
)

// peakLiveHeap runs f and returns the most heap it kept live at once, above
// what was live before it: the transient peak a GC'd process pays for in
// resident memory (at GOGC=100, about twice over). The GC runs every few
// percent of heap growth meanwhile, and each cycle's live heap is sampled
// from a finalizer it runs. The figure may miss a peak shorter than a
// cycle by those few percent, or one cycle's figure when its finalizer
// runs only after the next cycle: it bounds the peak from below, closely
// (five runs at 10k Services agree within 2 MiB).
func peakLiveHeap(f func()) uint64 {
	base := heapInUse()
	var mu sync.Mutex
	peak, done := uint64(0), false
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	var arm func()
	arm = func() {
		runtime.SetFinalizer(new([64]byte), func(*[64]byte) {
			mu.Lock()
			defer mu.Unlock()
			if done {
				return
			}
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64())
			arm()
		})
	}
	old := debug.SetGCPercent(5)
	arm()
	f()
	runtime.GC() // the last cycle samples what f keeps
	debug.SetGCPercent(old)
	mu.Lock()
	defer mu.Unlock()
	done = true
	metrics.Read(sample)
	peak = max(peak, sample[0].Value.Uint64())
	return peak - min(peak, base)
}

// BenchmarkRealFirstSyncPeakHeap10k is the heap an agent's first sync at
// 10k Services holds at its peak, against the kernel: the Builder's Build
// from scratch (what the agent runs), then the one netlink batch that
// writes the table (after boot, with no table), from its encoding to the
// kernel's acknowledgements. peak-MiB is the most it held at once;
// retained-MiB what is left once the sync is done (the Builder, and the
// Ruleset the applier remembers).
func BenchmarkRealFirstSyncPeakHeap10k(b *testing.B) { benchSyncPeakHeap(b, false) }

// BenchmarkRealRestartPeakHeap10k is the same for a restarted agent, which
// finds the table and reloads its elements alone.
func BenchmarkRealRestartPeakHeap10k(b *testing.B) { benchSyncPeakHeap(b, true) }

func benchSyncPeakHeap(b *testing.B, restart bool) {
	ctx := context.Background()
	svcs, sl := scaleCluster(10000)
	csvcs, csl := servicesFrom(svcs), slicesFrom(sl) // the agent's cache's objects
	nft := inNetns(b)
	reloader := NewNetlinkReloader(threadNetns(b))
	var peak, retained uint64
	for b.Loop() {
		if err := DeleteTable(ctx, nft); err != nil {
			b.Fatal(err)
		}
		if restart {
			// what the agent before the restart wrote
			if _, err := NewApplier(nft, ReloadElements(reloader)).Sync(ctx, Build(svcs, sl, testNode, Options{})); err != nil {
				b.Fatal(err)
			}
		}
		before := heapInUse()
		var bld *Builder
		var a *Applier
		peak = peakLiveHeap(func() {
			bld, a = NewBuilder(), NewApplier(nft, BatchElements(), ReloadElements(reloader))
			res, err := a.Sync(ctx, bld.Build(csvcs, csl, testNode, Options{}))
			if err != nil || res.Rewritten == restart || res.Reloaded != restart {
				b.Fatalf("sync: %+v, %v; want the table written over netlink, its elements alone after a restart", res, err)
			}
		})
		retained = heapInUse() - before
		runtime.KeepAlive(bld)
		runtime.KeepAlive(a)
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-MiB")
	b.ReportMetric(float64(retained)/(1<<20), "retained-MiB")
}
