package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"
)

// memoryLimitAuto is --memory-limit's default: a share of the container's
// own limit, when it has one.
const memoryLimitAuto = "auto"

// autoMemoryShare is the part of the container's memory limit given to the
// Go runtime's soft limit under "auto": the rest is for what the runtime
// does not count (the binary's pages, kernel buffers) and for the headroom
// that keeps the soft limit from meeting the hard one.
const autoMemoryShare = 0.9

// cgroupRoot is where container runtimes mount the container's own cgroup.
const cgroupRoot = "/sys/fs/cgroup"

// memoryLimit is --memory-limit resolved: the soft limit in bytes, and
// where it comes from (for the log); 0 means none.
type memoryLimit struct {
	bytes  int64
	source string
}

// parseMemoryLimit checks --memory-limit: "auto", "0", or a quantity.
// The cgroup is read only for "auto", at apply time.
func parseMemoryLimit(s string) (int64, error) {
	if s == memoryLimitAuto {
		return 0, nil
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("--memory-limit=%q: want %q, 0 or a quantity such as 100Mi: %w", s, memoryLimitAuto, err)
	}
	if q.Sign() < 0 {
		return 0, fmt.Errorf("--memory-limit=%q must not be negative", s)
	}
	return q.Value(), nil
}

// resolveMemoryLimit turns --memory-limit into the soft limit to set,
// reading the container's limit under root for "auto".
func resolveMemoryLimit(flagValue, root string) (memoryLimit, error) {
	if flagValue != memoryLimitAuto {
		n, err := parseMemoryLimit(flagValue)
		return memoryLimit{bytes: n, source: "--memory-limit"}, err
	}
	limit, ok, err := cgroupMemoryLimit(root)
	if err != nil || !ok {
		return memoryLimit{source: "no container memory limit"}, err
	}
	return memoryLimit{bytes: int64(float64(limit) * autoMemoryShare), source: "container memory limit"}, nil
}

// cgroupMemoryLimit reads the memory limit of the cgroup mounted at root:
// cgroup v2's memory.max, else v1's memory/memory.limit_in_bytes. ok is
// false when neither file exists or the limit is unlimited.
func cgroupMemoryLimit(root string) (limit int64, ok bool, err error) {
	for _, name := range []string{"memory.max", filepath.Join("memory", "memory.limit_in_bytes")} {
		data, err := os.ReadFile(filepath.Join(root, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("container memory limit: %w", err)
		}
		v := strings.TrimSpace(string(data))
		if v == "max" {
			return 0, false, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("container memory limit %s: %q: %w", name, v, err)
		}
		// cgroup v1 says "unlimited" with the largest page-aligned int64.
		if n <= 0 || n >= 1<<62 {
			return 0, false, nil
		}
		return n, true, nil
	}
	return 0, false, nil
}

// applyMemoryLimit sets the Go runtime's soft memory limit from
// --memory-limit. Without one the runtime lets the heap grow to twice the
// live data before collecting (GOGC=100), and at 10k Services the start's
// transient garbage (the informers' initial events, the first full sync's
// netlink messages) makes that twice the peak of the live data.
// A container limit that cannot be read leaves the runtime's default: the
// agent works without a soft limit, with more memory.
func applyMemoryLimit(logger klog.Logger, flagValue string) {
	m, err := resolveMemoryLimit(flagValue, cgroupRoot)
	if err != nil {
		logger.Error(err, "No Go runtime memory limit")
		return
	}
	if m.bytes > 0 {
		debug.SetMemoryLimit(m.bytes)
	}
	logger.Info("Go runtime memory limit", "bytes", m.bytes, "source", m.source)
}

// defaultGCPercent is --gc-percent's default. The agent's live data is
// mostly its caches and its ruleset, which change slowly, so its
// collections are cheap and few; at the runtime's default (100) the heap
// still grows to twice them before one, which at 10k Services is 35 MiB
// of resident memory for no benefit (docs/benchmarks.md has the figures).
const defaultGCPercent = 50

// applyGCPercent sets the collector's target from --gc-percent, unless the
// flag was not given and the GOGC environment variable, which the runtime
// has already obeyed, says otherwise.
func applyGCPercent(logger klog.Logger, percent int, given bool) {
	if env := os.Getenv("GOGC"); !given && env != "" {
		logger.Info("Go garbage collection target", "GOGC", env, "source", "GOGC")
		return
	}
	debug.SetGCPercent(percent)
	logger.Info("Go garbage collection target", "percent", percent, "source", "--gc-percent")
}
