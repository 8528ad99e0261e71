package scale

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldlb/herald/e2e/labkit"
	"github.com/heraldlb/herald/internal/testenv"
)

// BenchmarkEndpointToKernel is issue 14's first goal: one endpoint added to
// one Service among -dataplane.services (10k IPv6 Services of three
// endpoints, as in the side-by-side run) reaches the kernel in under 10 ms,
// measured from the EndpointSlice update call to the nftables notification
// of the kernel holding it. herald-agent runs with its default flags (and
// -dataplane.agent-args) in a network namespace, against a real apiserver
// reached through the lab's relay, as in production through a Service.
// Iterations are spaced by trialSpacing, outside the timer, so that the
// agent's --min-sync-period is never what is measured.
//
// It also reports the agent's peak RSS (VmHWM) at the end, and with
// -dataplane.heap-profile saves its heap profile there.
//
//	go test ./e2e/scale -run '^$' -bench EndpointToKernel -benchtime 30x
func BenchmarkEndpointToKernel(b *testing.B) {
	testenv.RequireRoot(b, "the data plane benchmark's network namespaces")
	agentBin := buildCommand(b, "herald-agent")
	l := newDPLab(b, *dpServices, "hn")
	// --profiling serves /debug/pprof/heap, which collects garbage on
	// request: see the heap goal below.
	args := append(strings.Fields(*dpAgentArgs), "--profiling")
	agent := l.heraldAgent(agentBin, "hn", args...)
	agent.start(b)
	agent.waitSynced(b, 10*time.Minute)
	m, err := newNFTMonitor(agent.node.Name)
	if err != nil {
		b.Fatal(err)
	}
	defer m.close()
	var lat []float64
	next := 0
	for b.Loop() {
		b.StopTimer()
		i := next
		next = (next + 1) % *dpServices
		ready := time.Now().Add(trialSpacing)
		update, err := l.endpointUpdate(context.Background(), i, 4)
		if err != nil {
			b.Fatal(err)
		}
		w := m.expect(dpEndpoint(i, 4).AsSlice())
		time.Sleep(time.Until(ready)) // pacing, see trialSpacing
		b.StartTimer()
		began := time.Now()
		if err := update(); err != nil {
			b.Fatal(err)
		}
		at, err := m.wait(w, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, float64(at.Sub(began).Microseconds())/1000)
	}
	slices.Sort(lat)
	b.ReportMetric(median(lat), "p50-ms")
	b.ReportMetric(lat[len(lat)*9/10], "p90-ms")
	// Issue 14's second goal, at the same scale: peak RSS under 100 MiB.
	mem, err := readMemory(agent.proc.PID())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(mem.PeakMiB, "peak-rss-MiB")
	b.ReportMetric(mem.FileMiB, "rss-file-MiB") // the binary's pages: see memory
	// The Go heap in use now (the live objects and what the GC has not
	// yet swept), from the agent's metrics: what the rest of RSS is not.
	heap, err := metricValue(labkit.HTTPClient(agent.node.Netns, 10*time.Second),
		"http://127.0.0.1:10279/metrics", "go_memstats_heap_inuse_bytes")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(heap/(1<<20), "heap-inuse-MiB")
	// The heap a long-running agent grows to before each collection: after
	// a forced one, the runtime's goal from the live data. A short run's
	// peak may not reach it (the first sync is followed by few
	// collections), so it bounds the steady state's peak where VmHWM
	// cannot.
	goal, err := heapGoalAfterGC(agent, "127.0.0.1:10279")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(goal/(1<<20), "heap-goal-MiB")
	b.ReportMetric(loadAverage(), "load1")
	if *dpHeap != "" {
		saveAgentHeap(b, agent, "127.0.0.1:10279", *dpHeap)
	}
}
