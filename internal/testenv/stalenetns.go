package testenv

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// RemoveStaleNetns deletes the network namespaces named <prefix><pid>-…
// whose process is gone: a test binary killed (a timeout, ^C) before its
// cleanups ran leaves its namespaces behind, and they pile up run after
// run. A namespace whose PID is alive, or was reused by another process,
// is left alone. It returns the names it deleted.
func RemoveStaleNetns(prefix string) ([]string, error) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil, err
	}
	var removed []string
	for line := range strings.SplitSeq(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if pid, ok := netnsOwner(name, prefix); ok && pid != os.Getpid() && processGone(pid) {
			if exec.Command("ip", "netns", "delete", name).Run() == nil {
				removed = append(removed, name)
			}
		}
	}
	return removed, nil
}

// netnsOwner reads the PID out of a name <prefix><pid>-<rest>.
func netnsOwner(name, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	pidText, _, ok := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(pidText)
	return pid, ok && err == nil && pid > 0
}

func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}
