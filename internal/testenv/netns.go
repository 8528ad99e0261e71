package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// netnsPrefix starts the names of EnterNetns's namespaces.
const netnsPrefix = "herald-test-"

var (
	netnsSeq   atomic.Int64
	sweepStale sync.Once
)

// EnterNetns moves the calling goroutine into a new, named network namespace
// for the rest of the test, so that what it does to nftables or conntrack
// never touches the host. It needs root and ip (through Unavailable
// otherwise); why says what needs the namespace.
//
// A child process starts in the network namespace of the thread that forks
// it, and a netlink socket opens in the namespace of the thread that
// creates it. So the goroutine is locked to its OS thread and only that
// thread joins the namespace (setns affects one thread, not the process).
// The thread is never unlocked: when the goroutine ends, the Go runtime
// terminates a still-locked thread instead of reusing it, so no other
// goroutine can ever run in the namespace. Unlike a wrapper around
// "ip netns exec", this adds nothing to what a benchmark measures.
//
// The namespace is named herald-test-<pid>-<n>, visible to "ip netns", so
// that a slow test can be inspected; tb.Cleanup deletes it, and the first
// call of a later process deletes those of a process killed before that.
func EnterNetns(tb testing.TB, why string) string {
	tb.Helper()
	RequireRoot(tb, why)
	RequireTools(tb, why, "ip")
	sweepStale.Do(func() {
		removed, err := RemoveStaleNetns(netnsPrefix)
		if err != nil {
			tb.Logf("listing network namespaces: %v", err)
		}
		for _, name := range removed {
			tb.Logf("removed network namespace %s, left by a test process that is gone", name)
		}
	})
	name := fmt.Sprintf("%s%d-%d", netnsPrefix, os.Getpid(), netnsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatalf("open netns %s: %v", name, err)
	}
	defer func() { _ = unix.Close(fd) }()
	runtime.LockOSThread() // never unlocked, see above
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		tb.Fatalf("setns %s: %v", name, err)
	}
	return name
}
