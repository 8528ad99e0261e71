package scale

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	dpEnabled   = flag.Bool("dataplane", false, "run herald-agent and kube-proxy side by side (minutes; loads the machine)")
	dpKubeProxy = flag.String("dataplane.kube-proxy", "", "kube-proxy binary (make bench-kube-proxy builds v1.37.2 from e2e/tools)")
	dpServices  = flag.Int("dataplane.services", 10000, "IPv6 ClusterIP Services, three endpoints each")
	dpRuns      = flag.Int("dataplane.runs", 3, "start/measure/restart rounds; the table shows medians")
	dpTrials    = flag.Int("dataplane.trials", 15, "endpoint additions timed per round")
	dpOut       = flag.String("dataplane.out", "", "write the figures as JSON here")
	dpHeap      = flag.String("dataplane.heap-profile", "", "save herald-agent's heap profile (pprof) here after the first round")
	dpAgentArgs = flag.String("dataplane.agent-args", "", "extra herald-agent flags, space-separated")
)

// trialSpacing keeps each endpoint addition clear of the previous sync's
// rate limit: both proxies' default --min-sync-period is 1 s. What is timed
// is the path from the EndpointSlice update to the kernel, not the limiter.
const trialSpacing = 1500 * time.Millisecond

// proxyRun is what one round measured for one proxy.
type proxyRun struct {
	StartSeconds   float64   `json:"start_to_first_sync_seconds"`
	CPUSeconds     float64   `json:"cpu_to_first_sync_seconds"`
	EndpointMillis []float64 `json:"endpoint_added_to_kernel_ms"`
	RestartSeconds float64   `json:"restart_to_synced_seconds"`
	PeakRSSMiB     float64   `json:"peak_rss_mib"`
	RestartPeakMiB float64   `json:"restart_peak_rss_mib"`
	// FileMiB: file-backed RSS (the binary, see memory) at the end.
	FileMiB float64 `json:"rss_file_mib"`
}

type sideBySide struct {
	Services     int                   `json:"services"`
	Runs         map[string][]proxyRun `json:"runs"`
	Medians      map[string]medians    `json:"medians"`
	AgentArgs    []string              `json:"herald_agent_extra_args,omitempty"`
	CPUs         int                   `json:"cpus"`
	LoadAvgStart float64               `json:"loadavg_1m_start"`
	LoadAvgEnd   float64               `json:"loadavg_1m_end"`
	Date         string                `json:"date"`
}

type medians struct {
	StartSeconds   float64 `json:"start_to_first_sync_seconds"`
	EndpointMillis float64 `json:"endpoint_added_to_kernel_ms"`
	RestartSeconds float64 `json:"restart_to_synced_seconds"`
	PeakRSSMiB     float64 `json:"peak_rss_mib"`
	FileMiB        float64 `json:"rss_file_mib"`
	CPUSeconds     float64 `json:"cpu_to_first_sync_seconds"`
}

// TestDataplaneSideBySide runs herald-agent and kube-proxy v1.37.2
// (nftables mode) against one apiserver, each in its own network
// namespace, started at the same moment, and prints the comparison table
// of issue 14. `make bench-kube-proxy` runs it.
func TestDataplaneSideBySide(t *testing.T) {
	if !*dpEnabled {
		t.Skip("not requested: run `make bench-kube-proxy` (or -args -dataplane -dataplane.kube-proxy=PATH)")
	}
	if !fileExists(*dpKubeProxy) {
		t.Fatalf("-dataplane.kube-proxy=%q: no such binary (e2e/tools/build.sh kube-proxy builds it)", *dpKubeProxy)
	}
	out := sideBySide{Services: *dpServices, Runs: map[string][]proxyRun{}, Medians: map[string]medians{},
		AgentArgs: strings.Fields(*dpAgentArgs), CPUs: runtime.NumCPU(), LoadAvgStart: loadAverage(),
		Date: time.Now().UTC().Format(time.RFC3339)}
	agentBin := buildCommand(t, "herald-agent")
	l := newDPLab(t, *dpServices, "hn", "kn")
	var heapPort string
	if *dpHeap != "" {
		out.AgentArgs = append(out.AgentArgs, "--profiling")
		heapPort = "127.0.0.1:10279"
	}
	proxies := []*proxy{l.heraldAgent(agentBin, "hn", out.AgentArgs...), l.kubeProxy(*dpKubeProxy, "kn")}
	next := 0 // Services get their fourth endpoint in turn, each once
	for run := range *dpRuns {
		runs := measureRound(t, l, proxies, &next)
		for i, p := range proxies {
			out.Runs[p.name] = append(out.Runs[p.name], runs[i])
		}
		t.Logf("round %d: %+v", run+1, runs)
		if run == 0 && *dpHeap != "" {
			saveAgentHeap(t, proxies[0], heapPort, *dpHeap)
		}
		for _, p := range proxies {
			p.proc.Stop(10 * time.Second)
		}
	}
	out.LoadAvgEnd = loadAverage()
	for name, runs := range out.Runs {
		out.Medians[name] = medianOf(runs)
	}
	writeSideBySide(t, out)
}

// measureRound starts every proxy on an empty namespace at once, times
// their first sync, then endpoint additions, then a restart.
func measureRound(t *testing.T, l *dpLab, proxies []*proxy, next *int) []proxyRun {
	t.Helper()
	for _, p := range proxies {
		p.deleteTables(t)
	}
	runs := make([]proxyRun, len(proxies))
	startAll(t, proxies, func(i int, took time.Duration, cpu float64) {
		runs[i].StartSeconds, runs[i].CPUSeconds = took.Seconds(), cpu
	})
	monitors := make([]*nftMonitor, len(proxies))
	for i, p := range proxies {
		m, err := newNFTMonitor(p.node.Name)
		if err != nil {
			t.Fatal(err)
		}
		defer m.close()
		monitors[i] = m
	}
	for range *dpTrials {
		i := *next
		*next++
		update, err := l.endpointUpdate(context.Background(), i, 4)
		if err != nil {
			t.Fatal(err)
		}
		addr := dpEndpoint(i, 4).AsSlice()
		waiters := make([]*nftWaiter, len(proxies))
		for j, m := range monitors {
			waiters[j] = m.expect(addr)
		}
		began := time.Now()
		if err := update(); err != nil {
			t.Fatal(err)
		}
		for j, m := range monitors {
			at, err := m.wait(waiters[j], 60*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", proxies[j].name, err)
			}
			runs[j].EndpointMillis = append(runs[j].EndpointMillis, float64(at.Sub(began).Microseconds())/1000)
		}
		time.Sleep(time.Until(began.Add(trialSpacing))) // pacing, see trialSpacing
	}
	for i, p := range proxies {
		mem, err := readMemory(p.proc.PID())
		if err != nil {
			t.Fatal(err)
		}
		runs[i].PeakRSSMiB, runs[i].FileMiB = mem.PeakMiB, mem.FileMiB
		p.proc.Stop(10 * time.Second)
	}
	startAll(t, proxies, func(i int, took time.Duration, _ float64) { runs[i].RestartSeconds = took.Seconds() })
	for i, p := range proxies {
		if mem, err := readMemory(p.proc.PID()); err == nil {
			runs[i].RestartPeakMiB = mem.PeakMiB
		}
	}
	return runs
}

// startAll starts the proxies at the same moment and reports each one's
// first sync as it completes.
func startAll(t *testing.T, proxies []*proxy, done func(i int, took time.Duration, cpu float64)) {
	t.Helper()
	for _, p := range proxies {
		p.start(t)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, p := range proxies {
		wg.Go(func() {
			took, cpu := p.waitSynced(t, 10*time.Minute)
			mu.Lock()
			defer mu.Unlock()
			done(i, took, cpu)
		})
	}
	wg.Wait()
}

func medianOf(runs []proxyRun) medians {
	var m medians
	var start, restart, rss, file, cpu, ep []float64
	for _, r := range runs {
		start, restart = append(start, r.StartSeconds), append(restart, r.RestartSeconds)
		file = append(file, r.FileMiB)
		rss, cpu = append(rss, max(r.PeakRSSMiB, r.RestartPeakMiB)), append(cpu, r.CPUSeconds)
		ep = append(ep, r.EndpointMillis...)
	}
	m.StartSeconds, m.RestartSeconds, m.PeakRSSMiB = median(start), median(restart), median(rss)
	m.CPUSeconds, m.EndpointMillis, m.FileMiB = median(cpu), median(ep), median(file)
	return m
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func writeSideBySide(t *testing.T, out sideBySide) {
	t.Helper()
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := *dpOut
	if path == "" {
		path = filepath.Join(t.TempDir(), "dataplane.json")
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	k, h := out.Medians["kube-proxy"], out.Medians["herald-agent"]
	var b strings.Builder
	fmt.Fprintf(&b, "| at %d Services (medians of %d runs) | kube-proxy | herald-agent |\n|---|---|---|\n", out.Services, *dpRuns)
	fmt.Fprintf(&b, "| start → first full sync | %.2f s | %.2f s |\n", k.StartSeconds, h.StartSeconds)
	fmt.Fprintf(&b, "| one endpoint added → visible in the kernel | %.1f ms | %.1f ms |\n", k.EndpointMillis, h.EndpointMillis)
	fmt.Fprintf(&b, "| restart → synced | %.2f s | %.2f s |\n", k.RestartSeconds, h.RestartSeconds)
	fmt.Fprintf(&b, "| peak RSS (VmHWM) | %.0f MiB | %.0f MiB |\n", k.PeakRSSMiB, h.PeakRSSMiB)
	fmt.Fprintf(&b, "| of which the binary's file pages (RssFile) | %.0f MiB | %.0f MiB |\n", k.FileMiB, h.FileMiB)
	fmt.Fprintf(&b, "| CPU to first sync | %.2f s | %.2f s |\n", k.CPUSeconds, h.CPUSeconds)
	fmt.Fprintf(&b, "\nload average (1 min) %.1f at the start, %.1f at the end; %d CPUs; figures in %s\n",
		out.LoadAvgStart, out.LoadAvgEnd, out.CPUs, path)
	// The table is the point of the run: print it whether or not -v is set.
	fmt.Print(b.String())
}
