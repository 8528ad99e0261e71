package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/heraldlb/herald/internal/testenv"
	"github.com/heraldlb/herald/provider/dataplane"
)

// BenchmarkDeleteStaleUDPFlows1k is one sync that made 1,000 UDP flows
// stale (say, the pods of 1,000 UDP Services left a drained node), each
// flow with one conntrack entry, in a table that also holds 1,000 entries
// to keep. "netlink" is herald-agent's NetlinkConntrack; "exec" is the
// conntrack tool it replaced, one process per flow. Each runs as root in a
// network namespace of its own (make bench):
//
//	go test ./provider/agent -run '^$' -bench DeleteStaleUDPFlows -benchtime 3x -count 5
func BenchmarkDeleteStaleUDPFlows1k(b *testing.B) {
	for _, impl := range []struct {
		name string
		new  func(testing.TB) Conntrack
	}{
		{"netlink", func(testing.TB) Conntrack { return NewNetlinkConntrack() }},
		{"exec", newExecConntrack},
	} {
		b.Run(impl.name, func(b *testing.B) {
			testenv.EnterNetns(b, "the conntrack benchmark")
			ct := impl.new(b)
			h := netfilterHandle(b)
			flows, stale, keep := staleFlowScenario(1000)
			for _, e := range keep {
				createEntry(b, h, e)
			}
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				for _, e := range stale {
					createEntry(b, h, e)
				}
				b.StartTimer()
				if err := ct.DeleteUDP(context.Background(), flows); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if left := len(listEntries(b, h)); left != len(keep) {
				b.Fatalf("%d entries left, want the %d to keep", left, len(keep))
			}
		})
	}
}

// staleFlowScenario returns n stale flows (n ClusterIP ports that each lost
// endpoint 192.0.2.2:5353), an entry for each, and n entries to keep: the
// same ports answered by an endpoint that stays.
func staleFlowScenario(n int) (flows []dataplane.StaleFlow, stale, keep []*netlink.ConntrackFlow) {
	gone := netip.MustParseAddrPort("192.0.2.2:5353")
	for i := range n {
		fePort := uint16(10000 + i)
		frontend := netip.AddrPortFrom(netip.MustParseAddr("198.51.100.1"), fePort).String()
		flows = append(flows, dataplane.StaleFlow{Dst: netip.MustParseAddr("198.51.100.1"), Port: fePort, Endpoint: gone})
		// a client port per flow: the kernel indexes entries by both tuples
		port := strconv.Itoa(20000 + i)
		stale = append(stale, ctEntry(unix.IPPROTO_UDP, "203.0.113.10:"+port, frontend, gone.String()))
		keep = append(keep, ctEntry(unix.IPPROTO_UDP, "203.0.113.11:"+port, frontend, "192.0.2.3:5353"))
	}
	return flows, stale, keep
}

// execConntrack is how herald-agent deleted stale flows before
// NetlinkConntrack, kept only to measure against: one conntrack -D per
// flow, each of which dumps the table.
type execConntrack struct{ path string }

func newExecConntrack(tb testing.TB) Conntrack {
	tb.Helper()
	testenv.RequireTools(tb, "the conntrack benchmark's exec variant", "conntrack")
	path, _ := exec.LookPath("conntrack") // found above
	return &execConntrack{path: path}
}

func (c *execConntrack) DeleteUDP(ctx context.Context, flows []dataplane.StaleFlow) error {
	var errs []error
	for _, f := range flows {
		args := conntrackArgs(f)
		out, err := exec.CommandContext(ctx, c.path, args...).CombinedOutput()
		// conntrack exits 1 when nothing matched; it says so on stderr.
		if err != nil && !bytes.Contains(out, []byte(" 0 flow entries have been deleted")) {
			errs = append(errs, fmt.Errorf("conntrack %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out)))
		}
	}
	return errors.Join(errs...)
}

// conntrackArgs selects a flow's entries as staleFlowFilter does.
func conntrackArgs(f dataplane.StaleFlow) []string {
	family := "ipv4"
	if f.IPv6 {
		family = "ipv6"
	}
	args := []string{"-D", "-f", family, "-p", "udp"}
	if f.Dst.IsValid() {
		args = append(args, "--orig-dst", f.Dst.String())
	}
	args = append(args, "--orig-port-dst", strconv.Itoa(int(f.Port)))
	if f.Endpoint.IsValid() {
		args = append(args, "--reply-src", f.Endpoint.Addr().String(),
			"--reply-port-src", strconv.Itoa(int(f.Endpoint.Port())))
	}
	return args
}
