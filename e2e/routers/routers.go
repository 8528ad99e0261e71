// Package routers runs real BGP routers, BIRD 2 and FRR, inside the network
// lab's namespaces for the BGP tier: each with configuration files the test
// writes and run directories of its own (never the host's daemons, never
// the host's /etc or /run), stopped by PID when the lab goes. The routers
// install what they learn into their namespace's kernel table, where the
// tests read it (NextHops).
package routers

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/e2e/netlab"
	"github.com/heraldlb/herald/internal/testenv"
)

// Kind names a router implementation.
type Kind string

// The routers the tier runs.
const (
	BIRD Kind = "bird"
	FRR  Kind = "frr"
)

// Binaries of each kind (Debian's bird2 and frr packages).
var binaries = map[Kind][]string{
	BIRD: {"/usr/sbin/bird", "/usr/sbin/birdc"},
	FRR:  {"/usr/lib/frr/zebra", "/usr/lib/frr/bgpd", "/usr/lib/frr/bfdd", "/usr/bin/vtysh"},
}

// Require ends tb through testenv.Unavailable (a skip by hand, a failure in
// CI) unless kind's binaries are installed.
func Require(tb testing.TB, kind Kind) {
	tb.Helper()
	for _, b := range binaries[kind] {
		if _, err := os.Stat(b); err != nil {
			testenv.Unavailable(tb, "the BGP tier needs %s (Debian package %s; make deps installs it): %v", b,
				map[Kind]string{BIRD: "bird2", FRR: "frr"}[kind], err)
		}
	}
}

// Neighbor is a node the router peers with.
type Neighbor struct {
	Name     string
	Address  netip.Addr
	ASN      uint32
	Password string
	// BFD runs BFD with the neighbor (FRR only).
	BFD bool
}

// Config is one router.
type Config struct {
	ASN uint32
	// Address is the router's LAN IPv4 address, also its router ID.
	Address   netip.Addr
	Neighbors []Neighbor
	// BFDInterval is the BFD transmit and receive interval (FRR; default
	// 100 ms, the interval the ~300 ms detection was measured with).
	BFDInterval time.Duration
}

// Router is a running router.
type Router interface {
	Kind() Kind
	// Established reports whether the session with addr is up.
	Established(addr netip.Addr) (bool, error)
	// SetPassword changes the MD5 password of the session with addr.
	SetPassword(addr netip.Addr, password string) error
	// LogTail returns the end of the router's logs, for failures.
	LogTail() string
}

// Start runs a router of kind in ns until the lab is torn down.
func Start(t netlab.T, lab *netlab.Lab, ns *netlab.Netns, kind Kind, cfg Config) Router {
	t.Helper()
	if cfg.BFDInterval == 0 {
		cfg.BFDInterval = 100 * time.Millisecond
	}
	dir := stateDir(t, lab, kind)
	switch kind {
	case BIRD:
		return startBIRD(t, lab, ns, dir, cfg)
	case FRR:
		return startFRR(t, lab, ns, dir, cfg)
	}
	t.Fatalf("routers: unknown kind %q", kind)
	return nil
}

// stateDir makes the router's run directory, named after this test binary,
// and removes those of test binaries that died without cleaning up, killing
// the daemons still running there (FRR's daemons drop privileges, which
// clears the parent-death signal that would otherwise end them). The lab
// removes it last, after the daemons stopped and their logs were shown.
func stateDir(t netlab.T, lab *netlab.Lab, kind Kind) string {
	t.Helper()
	prefix := fmt.Sprintf("herald-router-%d-", os.Getpid())
	removeStale()
	dir, err := os.MkdirTemp("", prefix+string(kind)+"-")
	if err != nil {
		t.Fatal(err)
	}
	lab.OnCleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func removeStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "herald-router-*"))
	for _, d := range dirs {
		pidText, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), "herald-router-"), "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue
		}
		pidFiles, _ := filepath.Glob(filepath.Join(d, "*.pid"))
		for _, f := range pidFiles {
			killIfRunningIn(f, d)
		}
		_ = os.RemoveAll(d)
	}
}

// killIfRunningIn kills the process of a PID file if its command line
// names dir: a PID reused by an unrelated process is left alone.
func killIfRunningIn(pidFile, dir string) {
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err == nil && strings.Contains(string(cmdline), dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// startDaemon runs a router daemon in ns, stopped when the lab goes.
func startDaemon(t netlab.T, lab *netlab.Lab, ns *netlab.Netns, dir, name, binary string, args ...string) *cluster.Process {
	t.Helper()
	p, err := ns.Start(name, filepath.Join(dir, name+".out"), binary, args...)
	if err != nil {
		t.Fatal(err)
	}
	lab.OnCleanup(func() { p.Stop(5 * time.Second) })
	return p
}

// NextHops returns the gateways of the kernel's route to prefix in ns's
// main table (several for an ECMP route), sorted; none when there is no
// route.
func NextHops(ns *netlab.Netns, prefix netip.Prefix) ([]netip.Addr, error) {
	var out []netip.Addr
	err := ns.Do(func() error {
		family := unix.AF_INET
		if prefix.Addr().Is6() {
			family = unix.AF_INET6
		}
		dst := prefixNet(prefix)
		routes, err := netlink.RouteListFiltered(family, &netlink.Route{Dst: dst, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Gw != nil {
				out = append(out, addrOf(r.Gw))
			}
			for _, nh := range r.MultiPath {
				if nh.Gw != nil {
					out = append(out, addrOf(nh.Gw))
				}
			}
		}
		return nil
	})
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), err
}

func addrOf(ip []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// neighborKey is how the routers' configurations name a neighbor.
func neighborKey(n Neighbor) string { return "node_" + strings.ReplaceAll(n.Name, "-", "_") }

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
