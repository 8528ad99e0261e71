package dataplane

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/internal/testenv"
)

// Tests and benchmarks against the kernel (TestReal*, BenchmarkReal*) run
// nft and netlink in a network namespace of their own, so that they never
// touch the host's ruleset. They need root and nft: by hand they skip
// without them, in CI they fail (internal/testenv).

// inNetns moves the calling goroutine into a new network namespace (see
// testenv.EnterNetns) and returns a knftables.Interface whose nft runs there.
func inNetns(b testing.TB) knftables.Interface {
	b.Helper()
	why := "tests and benchmarks against the kernel's nftables (a network namespace each)"
	testenv.RequireTools(b, why, "nft")
	name := testenv.EnterNetns(b, why)
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
