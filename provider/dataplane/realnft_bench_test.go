package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

// The BenchmarkReal* benchmarks drive the real nft binary against the
// kernel, each in a network namespace of its own so that they never touch
// the host's ruleset. They need root (CI runs as root) and skip otherwise.
// Like every benchmark they run only with -bench (make bench), never in
// make test.

var netnsSeq atomic.Int64

// inNetns moves the calling goroutine into a new, named network namespace
// and returns a knftables.Interface whose nft runs there.
//
// knftables execs nft from the goroutine that calls it, and a child process
// starts in the network namespace of the thread that forks it. So the
// benchmark goroutine is locked to its OS thread, and only that thread joins
// the namespace (setns affects one thread, not the process). The thread is
// never unlocked: when the benchmark goroutine ends, the Go runtime
// terminates a still-locked thread instead of reusing it, so no other
// goroutine can ever run in the namespace. Unlike a wrapper script around
// "ip netns exec", this adds nothing to the measured time.
//
// The namespace is named (herald-bench-<pid>-<n>, visible to "ip netns") so
// that a slow benchmark can be inspected, and deleted in b.Cleanup. Tests use
// it too (b is then a *testing.T).
func inNetns(b testing.TB) knftables.Interface {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("real nft benchmarks and tests need root, to create a network namespace and run nft in it")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("real nft benchmarks and tests need %s: %v", tool, err)
		}
	}
	name := fmt.Sprintf("herald-bench-%d-%d", os.Getpid(), netnsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	b.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			b.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatalf("open netns %s: %v", name, err)
	}
	defer func() { _ = unix.Close(fd) }()
	runtime.LockOSThread() // never unlocked, see above
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		b.Fatalf("setns %s: %v", name, err)
	}
	nft, err := knftables.New(TableFamily, TableName)
	if err != nil {
		b.Fatalf("knftables in netns %s: %v", name, err)
	}
	return nft
}

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

// threadNetns opens the network namespace of the calling thread, which
// inNetns has locked and moved; netlink sockets made with it land there
// whichever thread creates them.
func threadNetns(b testing.TB) int {
	b.Helper()
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatalf("open own netns: %v", err)
	}
	b.Cleanup(func() { _ = unix.Close(fd) })
	return fd
}

// phaseTimer splits a benchmark's wall time between building and syncing
// (the latter is mostly nft), reported as build-ms/op and sync-ms/op. On a
// shared machine wall time mostly measures waiting for a CPU, so it also
// reports CPU time: go-cpu-ms/op for this process (GC included) and
// nft-cpu-ms/op for the nft processes it ran.
type phaseTimer struct {
	building, syncing time.Duration
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
	start := time.Now()
	res, err := f()
	t.syncing += time.Since(start)
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
// the table (after boot): nft writes the skeleton, elements go over netlink.
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
		if err != nil || !res.Reloaded {
			b.Fatalf("first sync: %+v, %v; want it to create the table and reload", res, err)
		}
	}
	t.report(b)
}

// BenchmarkRealPartialSyncOneService10k is one Service among 10k going from
// three endpoints to four and back: a Builder's Build (as the agent does)
// plus a partial sync, over netlink as the agent does it.
func BenchmarkRealPartialSyncOneService10k(b *testing.B) { benchRealPartialSync(b, true) }

// The same through nft, as without ReloadElements.
func BenchmarkRealPartialSyncNFTOneService10k(b *testing.B) { benchRealPartialSync(b, false) }

func benchRealPartialSync(b *testing.B, netlink bool) {
	ctx := context.Background()
	svcs, sl := scaleCluster(10000)
	states := [2][]*discoveryv1.EndpointSlice{sl, append([]*discoveryv1.EndpointSlice(nil), sl...)}
	states[1][4242] = scaleSlice(svcs[4242].Name, 4242, 4)
	opts := []ApplierOption{BatchElements()}
	nft := inNetns(b)
	if netlink {
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
		res, err := t.sync(func() (SyncResult, error) { return a.Sync(ctx, r) })
		if err != nil || res.Full {
			b.Fatalf("sync: %v full=%t", err, res.Full)
		}
	}
	t.report(b)
}

// TestRealBatchedFullSyncMatchesPerElement: the kernel holds the same table
// whether a full sync's elements are batched or written one per command,
// over states with source-range intervals, affinity, comments and both
// families. It needs root and nft, and skips otherwise.
func TestRealBatchedFullSyncMatchesPerElement(t *testing.T) {
	nft := inNetns(t)
	ctx := context.Background()
	list := func() string {
		out, err := exec.Command("nft", "list", "table", string(TableFamily), TableName).CombinedOutput()
		if err != nil {
			t.Fatalf("nft list table: %v: %s", err, out)
		}
		return string(out)
	}
	st := builderStates()
	// the start (source ranges, affinity, Local policies, a shared
	// frontend) and the last state with Services, which has pod CIDRs
	for _, s := range []buildState{st[0], st[len(st)-2]} {
		r := Build(s.svcs, s.slices, s.node, s.opts)
		batched := NewApplier(nft, BatchElements())
		if _, err := batched.SyncFull(ctx, r); err != nil {
			t.Fatalf("%s: batched: %v", s.name, err)
		}
		got := list()
		if _, err := (&Applier{nft: nft}).SyncFull(ctx, r); err != nil {
			t.Fatalf("%s: one element per command: %v", s.name, err)
		}
		if want := list(); got != want {
			t.Errorf("%s: batched table differs:\n got %s\nwant %s", s.name, got, want)
		}
	}
}

// listTable is the kernel's herald table as nft prints it.
func listTable(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("nft", "list", "table", string(TableFamily), TableName).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list table: %v: %s", err, out)
	}
	return string(out)
}

// TestRealReloadWritesWhatNftWrites: elements written over netlink read back
// through nft exactly as the same elements written as nft text, for states
// with every kind of container: verdict maps with comments, endpoint maps,
// both families, rbtree (pod CIDRs) and concatenated (source ranges)
// intervals, and enough elements to need several netlink messages.
func TestRealReloadWritesWhatNftWrites(t *testing.T) {
	nft := inNetns(t)
	reloader := NewNetlinkReloader(threadNetns(t))
	ctx := context.Background()
	st := builderStates()
	big, bigSl := scaleCluster(400)
	wide := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("2001:db8::/32")}
	for _, s := range []buildState{
		st[0],
		st[len(st)-2],
		{name: "400 Services", svcs: big, slices: bigSl, node: testNode, opts: Options{PodCIDRs: wide}},
	} {
		r := Build(s.svcs, s.slices, s.node, s.opts)
		if _, err := NewApplier(nft, BatchElements()).SyncFull(ctx, r); err != nil {
			t.Fatalf("%s: nft: %v", s.name, err)
		}
		want := listTable(t)

		empty := *r
		empty.Elements = map[string]Elements{}
		if err := reloader.Reload(ctx, &empty); err != nil {
			t.Fatalf("%s: reload without elements: %v", s.name, err)
		}
		if got := listTable(t); strings.Contains(got, "elements =") {
			t.Fatalf("%s: reload did not flush:\n%s", s.name, got)
		}
		if err := reloader.Reload(ctx, r); err != nil {
			t.Fatalf("%s: reload: %v", s.name, err)
		}
		if got := listTable(t); got != want {
			t.Errorf("%s: the table differs after a netlink reload:\n%s", s.name, lineDiff(want, got))
		}
	}
}

// TestRealApplierReloadsUntilTampered: the agent's Applier reloads elements
// on full syncs, keeps remembered ClientIP choices through them, and goes
// back to nft when someone changed a rule of the table.
func TestRealApplierReloadsUntilTampered(t *testing.T) {
	nft := inNetns(t)
	ctx := context.Background()
	a := NewApplier(nft, BatchElements(), ReloadElements(NewNetlinkReloader(threadNetns(t))))
	st := builderStates()
	start, scaled := st[0], st[3] // "scale one to 4": elements only
	want := func(s buildState) string {
		t.Helper()
		if _, err := NewApplier(nft, BatchElements()).SyncFull(ctx, Build(s.svcs, s.slices, s.node, s.opts)); err != nil {
			t.Fatal(err)
		}
		return listTable(t)
	}
	wantScaled := want(scaled)
	full := func(s buildState, wantReloaded bool) {
		t.Helper()
		res, err := a.SyncFull(ctx, Build(s.svcs, s.slices, s.node, s.opts))
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if res.Reloaded != wantReloaded {
			t.Fatalf("%s: reloaded=%t, want %t", s.name, res.Reloaded, wantReloaded)
		}
	}
	full(start, false)
	// a client stuck to endpoint 192.0.2.71 of the "aff" Service
	remembered := "192.0.2.250 . 198.51.100.7 . tcp . 80"
	if out, err := exec.Command("nft", "add element inet herald aff4 { "+remembered+" : 192.0.2.71 . 8080 }").CombinedOutput(); err != nil {
		t.Fatalf("add affinity entry: %v: %s", err, out)
	}
	full(scaled, true)
	got := listTable(t)
	if !strings.Contains(got, remembered) {
		t.Errorf("a reload forgot a remembered ClientIP choice:\n%s", got)
	}
	if withoutNotes(got) != withoutNotes(wantScaled) {
		t.Errorf("reloaded table differs from nft's:\n%s", lineDiff(withoutNotes(wantScaled), withoutNotes(got)))
	}

	if out, err := exec.Command("nft", "add rule inet herald services counter accept").CombinedOutput(); err != nil {
		t.Fatalf("tamper: %v: %s", err, out)
	}
	full(scaled, false)
	if got := listTable(t); withoutNotes(got) != withoutNotes(wantScaled) {
		t.Errorf("the table was not repaired:\n%s", lineDiff(withoutNotes(wantScaled), withoutNotes(got)))
	}
	full(start, true)

	// A restarted agent knows nothing but finds the stamp.
	a = NewApplier(nft, BatchElements(), ReloadElements(NewNetlinkReloader(threadNetns(t))))
	full(scaled, true)
	if got := listTable(t); withoutNotes(got) != withoutNotes(wantScaled) {
		t.Errorf("a restarted agent's reload differs from nft's:\n%s", lineDiff(withoutNotes(wantScaled), withoutNotes(got)))
	}
}

// withoutNotes drops the containers whose elements herald does not
// desire but finds: ClientIP choices (aff4/aff6), written by the packet path
// or the test, and the applier's stamp.
func withoutNotes(table string) string {
	var out []string
	skip := false
	for _, l := range strings.Split(table, "\n") {
		switch strings.TrimSpace(l) {
		case "map aff4 {", "map aff6 {", "set stamp {":
			skip = true
		case "}":
			if skip {
				skip = false
				continue
			}
		}
		if !skip {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// lineDiff lists the lines only one side has.
func lineDiff(want, got string) string {
	count := map[string]int{}
	for _, l := range strings.Split(want, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(got, "\n") {
		count[l]--
	}
	var b strings.Builder
	for l, n := range count {
		switch {
		case n > 0:
			fmt.Fprintf(&b, "- %s\n", l)
		case n < 0:
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	return b.String()
}

// TestRealFirstSyncCreatesTheTableThenReloads: on a node without the table
// nft writes only the skeleton and the elements go over netlink; the result
// is the table nft alone would have written.
func TestRealFirstSyncCreatesTheTableThenReloads(t *testing.T) {
	nft := inNetns(t)
	ctx := context.Background()
	st := builderStates()
	s := st[len(st)-2] // pod CIDRs: an rbtree interval set too
	r := Build(s.svcs, s.slices, s.node, s.opts)
	res, err := NewApplier(nft, BatchElements(), ReloadElements(NewNetlinkReloader(threadNetns(t)))).Sync(ctx, r)
	if err != nil || !res.Full || !res.Reloaded {
		t.Fatalf("first sync: %+v, %v; want a full sync that reloaded", res, err)
	}
	got := listTable(t)
	if _, err := NewApplier(nft, BatchElements()).SyncFull(ctx, r); err != nil {
		t.Fatal(err)
	}
	if want := listTable(t); withoutNotes(got) != withoutNotes(want) {
		t.Errorf("created table differs from nft's:\n%s", lineDiff(withoutNotes(want), withoutNotes(got)))
	}
}

// TestRealPartialSyncsOverNetlink: walking the builder's states with the
// agent's Applier (partial syncs over netlink where no chain goes) leaves
// the kernel table nft alone writes for each state.
func TestRealPartialSyncsOverNetlink(t *testing.T) {
	nft := inNetns(t)
	ctx := context.Background()
	st := builderStates()
	want := make([]string, len(st))
	for i, s := range st {
		if _, err := NewApplier(nft, BatchElements()).SyncFull(ctx, Build(s.svcs, s.slices, s.node, s.opts)); err != nil {
			t.Fatalf("%s: nft: %v", s.name, err)
		}
		want[i] = withoutNotes(listTable(t))
	}
	if err := DeleteTable(ctx, nft); err != nil {
		t.Fatal(err)
	}
	a := NewApplier(nft, BatchElements(), ReloadElements(NewNetlinkReloader(threadNetns(t))))
	b := NewBuilder()
	partial := 0
	for i, s := range st {
		res, err := a.Sync(ctx, b.Build(s.svcs, s.slices, s.node, s.opts))
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !res.Full {
			partial++
		}
		if got := withoutNotes(listTable(t)); got != want[i] {
			t.Errorf("%s (%+v): table differs from nft's:\n%s", s.name, res, lineDiff(want[i], got))
		}
	}
	if partial < len(st)/2 {
		t.Errorf("only %d of %d syncs were partial: the test does not exercise netlink changes", partial, len(st))
	}
}
