package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestNetnsOwner(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pid     int
		matches bool
	}{
		{"herald-test-123-4", 123, true},
		{"herald-test-123-x-y", 123, true},
		{"herald-test-123", 0, false}, // no "-" after the PID: not ours
		{"herald-test-abc-1", 0, false},
		{"herald-test--1", 0, false},
		{"hl-123-node1", 0, false},
		{"someone-else", 0, false},
	} {
		pid, ok := netnsOwner(tc.name, "herald-test-")
		if ok != tc.matches || ok && pid != tc.pid {
			t.Errorf("netnsOwner(%q) = %d, %v; want %d, %v", tc.name, pid, ok, tc.pid, tc.matches)
		}
	}
}

// TestRemoveStaleNetnsKeepsLiveOwners creates namespaces as a dead process,
// this process and a live one (PID 1) would have, and checks that only the
// dead one's goes.
func TestRemoveStaleNetnsKeepsLiveOwners(t *testing.T) {
	RequireRoot(t, "creating network namespaces")
	RequireTools(t, "creating network namespaces", "ip")
	done := exec.Command("true")
	if err := done.Run(); err != nil {
		t.Fatal(err)
	}
	const prefix = "herald-sweeptest-"
	dead := fmt.Sprintf("%s%d-1", prefix, done.Process.Pid)
	mine := fmt.Sprintf("%s%d-1", prefix, os.Getpid())
	live := prefix + "1-1"
	for _, name := range []string{dead, mine, live} {
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", name, err, out)
		}
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", name).Run() })
	}
	removed, err := RemoveStaleNetns(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{dead}) {
		t.Errorf("removed %v, want only %s (its process is gone)", removed, dead)
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for line := range strings.Lines(string(out)) {
		if fields := strings.Fields(line); len(fields) > 0 {
			left = append(left, fields[0]) // "name (id: N)"
		}
	}
	for _, name := range []string{mine, live} {
		if !slices.Contains(left, name) {
			t.Errorf("%s was removed, but its process is alive", name)
		}
	}
}
