package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/provider/dataplane"
)

// Conntrack deletes conntrack entries that a sync made stale (see
// dataplane.StaleFlow for why UDP needs it).
type Conntrack interface {
	DeleteUDP(ctx context.Context, flows []dataplane.StaleFlow) error
}

// ErrConntrack wraps every failure to delete conntrack entries.
var ErrConntrack = errors.New("delete conntrack entries")

// NetlinkConntrack deletes conntrack entries over netlink, as kube-proxy
// does: per address family, one dump of the table and one delete message
// per matching entry, however many flows went stale. The conntrack tool
// costs a process and a dump per flow, which puts seconds on the sync path
// when a Service with many UDP clients loses an endpoint (see
// docs/benchmarks.md).
type NetlinkConntrack struct {
	// newHandle opens a netfilter netlink socket in the calling thread's
	// network namespace.
	newHandle func() (*netlink.Handle, error)
}

// NewNetlinkConntrack deletes entries in the agent's network namespace.
func NewNetlinkConntrack() *NetlinkConntrack {
	return &NetlinkConntrack{newHandle: func() (*netlink.Handle, error) {
		return netlink.NewHandle(unix.NETLINK_NETFILTER)
	}}
}

// dumpAttempts bounds retries of a dump that the kernel interrupted because
// the table changed meanwhile: entries may have been missed, and on a busy
// node the next dump usually completes.
const dumpAttempts = 3

// DeleteUDP deletes every UDP entry of the flows; a flow with no entries is
// not an error. It tries both families and reports all failures.
func (c *NetlinkConntrack) DeleteUDP(ctx context.Context, flows []dataplane.StaleFlow) error {
	if len(flows) == 0 {
		return nil
	}
	h, err := c.newHandle()
	if err != nil {
		return fmt.Errorf("%w: netlink: %w", ErrConntrack, err)
	}
	defer h.Close()
	var errs []error
	for _, v6 := range []bool{false, true} {
		filter := newStaleFlowFilter(flows, v6)
		if filter == nil {
			continue
		}
		family := netlink.InetFamily(unix.AF_INET)
		if v6 {
			family = unix.AF_INET6
		}
		var deleted uint
		for range dumpAttempts {
			if err = ctx.Err(); err != nil {
				break
			}
			var n uint
			n, err = h.ConntrackDeleteFilters(netlink.ConntrackTable, family, filter)
			deleted += n
			if !errors.Is(err, netlink.ErrDumpInterrupted) {
				break
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: IPv6 %t: %w", ErrConntrack, v6, err))
		}
		klog.FromContext(ctx).V(4).Info("Deleted UDP conntrack entries", "ipv6", v6, "flows", filter.flows, "entries", deleted)
	}
	return errors.Join(errs...)
}

// staleFlowFilter matches the conntrack entries of one family's stale
// flows, as the conntrack tool's -D with --orig-dst, --orig-port-dst and,
// for a removed endpoint, --reply-src and --reply-port-src would. Flows are
// indexed by frontend, so a dump of a large table costs one lookup per
// entry, not one per entry and flow.
type staleFlowFilter struct {
	// endpoints lists, per frontend (address unset for a NodePort), the
	// endpoints whose entries are stale; an invalid one means every entry.
	endpoints map[udpFrontend][]netip.AddrPort
	flows     int
}

type udpFrontend struct {
	addr netip.Addr
	port uint16
}

// newStaleFlowFilter returns nil when no flow is of the family.
func newStaleFlowFilter(flows []dataplane.StaleFlow, v6 bool) *staleFlowFilter {
	f := &staleFlowFilter{endpoints: map[udpFrontend][]netip.AddrPort{}}
	for _, fl := range flows {
		if fl.IPv6 != v6 {
			continue
		}
		fe := udpFrontend{addr: fl.Dst.Unmap(), port: fl.Port}
		f.endpoints[fe] = append(f.endpoints[fe], fl.Endpoint)
		f.flows++
	}
	if f.flows == 0 {
		return nil
	}
	return f
}

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (f *staleFlowFilter) MatchConntrackFlow(e *netlink.ConntrackFlow) bool {
	if e.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	dst := addrOf(e.Forward.DstIP)
	replySrc := netip.AddrPortFrom(addrOf(e.Reverse.SrcIP), e.Reverse.SrcPort)
	for _, fe := range []udpFrontend{{addr: dst, port: e.Forward.DstPort}, {port: e.Forward.DstPort}} {
		for _, ep := range f.endpoints[fe] {
			if !ep.IsValid() || ep == replySrc {
				return true
			}
		}
	}
	return false
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
