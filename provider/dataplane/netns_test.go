package dataplane

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/internal/testenv"
)

// Tests and benchmarks against the kernel (TestReal*, BenchmarkReal*) run
// nft and netlink in a network namespace of their own, so that they never
// touch the host's ruleset. They need root and nft: by hand they skip
// without them, in CI they fail (internal/testenv).

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
// that a slow benchmark can be inspected, and deleted in b.Cleanup.
func inNetns(b testing.TB) knftables.Interface {
	b.Helper()
	testenv.RequireRoot(b, "tests and benchmarks against the kernel's nftables (a network namespace each)")
	testenv.RequireTools(b, "tests and benchmarks against the kernel's nftables", "ip", "nft")
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

// listTable is the kernel's herald table as nft prints it.
func listTable(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("nft", "list", "table", string(TableFamily), TableName).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list table: %v: %s", err, out)
	}
	return string(out)
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
