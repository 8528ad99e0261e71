package agent

import (
	"context"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/internal/testenv"
	"github.com/heraldlb/herald/provider/dataplane"
)

// ctEntry is a conntrack entry: proto, the original tuple (client to
// frontend) and the reply's source (the endpoint that answers).
func ctEntry(proto uint8, client, frontend, replyFrom string) *netlink.ConntrackFlow {
	c, fe, ep := netip.MustParseAddrPort(client), netip.MustParseAddrPort(frontend), netip.MustParseAddrPort(replyFrom)
	ip := func(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }
	family := uint8(unix.AF_INET)
	if c.Addr().Is6() {
		family = unix.AF_INET6
	}
	return &netlink.ConntrackFlow{
		FamilyType: family,
		Forward:    netlink.IPTuple{Protocol: proto, SrcIP: ip(c.Addr()), SrcPort: c.Port(), DstIP: ip(fe.Addr()), DstPort: fe.Port()},
		Reverse:    netlink.IPTuple{Protocol: proto, SrcIP: ip(ep.Addr()), SrcPort: ep.Port(), DstIP: ip(c.Addr()), DstPort: c.Port()},
		TimeOut:    120,
	}
}

// staleFlowCases are the flows of one sync and conntrack entries with
// whether those flows make them stale.
var (
	staleFlows = []dataplane.StaleFlow{
		// endpoint 198.51.100.2:5353 left the ClusterIP's DNS port
		{Dst: netip.MustParseAddr("203.0.113.53"), Port: 53, Endpoint: netip.MustParseAddrPort("198.51.100.2:5353")},
		// a NodePort got its first endpoint
		{Port: 30053},
		// an IPv6 frontend got its first endpoint
		{IPv6: true, Dst: netip.MustParseAddr("2001:db8::53"), Port: 53},
	}
	staleFlowCases = []struct {
		name  string
		entry *netlink.ConntrackFlow
		stale bool
	}{
		{"to the removed endpoint", ctEntry(unix.IPPROTO_UDP, "192.0.2.100:40000", "203.0.113.53:53", "198.51.100.2:5353"), true},
		{"to an endpoint that stays", ctEntry(unix.IPPROTO_UDP, "192.0.2.100:40001", "203.0.113.53:53", "198.51.100.3:5353"), false},
		{"TCP to the removed endpoint", ctEntry(unix.IPPROTO_TCP, "192.0.2.100:40002", "203.0.113.53:53", "198.51.100.2:5353"), false},
		{"same endpoint, another frontend", ctEntry(unix.IPPROTO_UDP, "192.0.2.100:40003", "203.0.113.54:53", "198.51.100.2:5353"), false},
		{"same endpoint, another port", ctEntry(unix.IPPROTO_UDP, "192.0.2.100:40004", "203.0.113.53:54", "198.51.100.2:5353"), false},
		{"NodePort, un-NATed", ctEntry(unix.IPPROTO_UDP, "192.0.2.100:40005", "192.0.2.11:30053", "192.0.2.11:30053"), true},
		{"NodePort on another node address", ctEntry(unix.IPPROTO_UDP, "192.0.2.100:40006", "192.0.2.12:30053", "198.51.100.9:5353"), true},
		{"IPv6 frontend, un-NATed", ctEntry(unix.IPPROTO_UDP, "[2001:db8::100]:40007", "[2001:db8::53]:53", "[2001:db8::53]:53"), true},
		{"IPv6, another frontend", ctEntry(unix.IPPROTO_UDP, "[2001:db8::100]:40008", "[2001:db8::54]:53", "[2001:db8::54]:53"), false},
		{"IPv4 frontend on port 53 with no flow of its own", ctEntry(unix.IPPROTO_UDP, "192.0.2.100:40009", "203.0.113.99:53", "203.0.113.99:53"), false},
	}
)

func TestStaleFlowFilter(t *testing.T) {
	filters := map[bool]*staleFlowFilter{false: newStaleFlowFilter(staleFlows, false), true: newStaleFlowFilter(staleFlows, true)}
	for _, tc := range staleFlowCases {
		if got := filters[tc.entry.FamilyType == unix.AF_INET6].MatchConntrackFlow(tc.entry); got != tc.stale {
			t.Errorf("%s: stale %t, want %t", tc.name, got, tc.stale)
		}
	}
	if f := newStaleFlowFilter(staleFlows[:2], true); f != nil {
		t.Errorf("IPv6 filter from IPv4 flows only: %+v, want nil (no dump of the IPv6 table)", f)
	}
}

// TestRealNetlinkConntrackDeletesStaleEntries writes the cases' entries into
// the kernel's conntrack table (in a network namespace of its own) and
// checks that DeleteUDP removes exactly the stale ones.
func TestRealNetlinkConntrackDeletesStaleEntries(t *testing.T) {
	testenv.EnterNetns(t, "conntrack tests against the kernel")
	h := netfilterHandle(t)
	var want []string
	for _, tc := range staleFlowCases {
		createEntry(t, h, tc.entry)
		if !tc.stale {
			want = append(want, tc.name)
		}
	}
	if got := entryNames(t, h); len(got) != len(staleFlowCases) {
		t.Fatalf("the table holds %q, want every case", got)
	}
	if err := NewNetlinkConntrack().DeleteUDP(context.Background(), staleFlows); err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	if got := entryNames(t, h); !slices.Equal(got, want) {
		t.Errorf("entries left: %q\nwant only %q", got, want)
	}
}

// entryNames lists the staleFlowCases found in the kernel's table, sorted.
func entryNames(tb testing.TB, h *netlink.Handle) []string {
	tb.Helper()
	var out []string
	for _, e := range listEntries(tb, h) {
		for _, tc := range staleFlowCases {
			if reflect.DeepEqual(tc.entry.Forward, stripCounters(e.Forward)) {
				out = append(out, tc.name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// netfilterHandle opens conntrack netlink in the calling thread's network
// namespace.
func netfilterHandle(tb testing.TB) *netlink.Handle {
	tb.Helper()
	h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(h.Close)
	return h
}

func createEntry(tb testing.TB, h *netlink.Handle, e *netlink.ConntrackFlow) {
	tb.Helper()
	if err := h.ConntrackCreate(netlink.ConntrackTable, netlink.InetFamily(e.FamilyType), e); err != nil {
		tb.Fatalf("create conntrack entry %v: %v", e, err)
	}
}

func listEntries(tb testing.TB, h *netlink.Handle) []*netlink.ConntrackFlow {
	tb.Helper()
	var out []*netlink.ConntrackFlow
	for _, family := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		entries, err := h.ConntrackTableList(netlink.ConntrackTable, family)
		if err != nil {
			tb.Fatalf("list conntrack entries: %v", err)
		}
		out = append(out, entries...)
	}
	return out
}

// stripCounters leaves the tuple as ctEntry writes it.
func stripCounters(t netlink.IPTuple) netlink.IPTuple {
	t.Bytes, t.Packets = 0, 0
	if v4 := t.SrcIP.To4(); v4 != nil {
		t.SrcIP = v4
	}
	if v4 := t.DstIP.To4(); v4 != nil {
		t.DstIP = v4
	}
	return t
}

// fakeConntrack records what the agent asks to delete.
type fakeConntrack struct {
	mu    sync.Mutex
	flows []dataplane.StaleFlow
}

func (f *fakeConntrack) DeleteUDP(_ context.Context, flows []dataplane.StaleFlow) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flows = append(f.flows, flows...)
	return nil
}

func (f *fakeConntrack) take() []dataplane.StaleFlow {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.flows
	f.flows = nil
	return out
}

func TestAgentDeletesStaleUDPFlows(t *testing.T) {
	dns := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "dns"},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeClusterIP, ClusterIP: "198.51.100.53", ClusterIPs: []string{"198.51.100.53"},
			Ports: []v1.ServicePort{{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53}}},
	}
	slice := func(addrs ...string) *discoveryv1.EndpointSlice {
		s := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "dns-1",
				Labels: map[string]string{discoveryv1.LabelServiceName: "dns"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("dns"), Protocol: ptr.To(v1.ProtocolUDP), Port: ptr.To[int32](5353)}},
		}
		for _, a := range addrs {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
		}
		return s
	}
	h := newHarness(t, testNode(), dns, slice("192.0.2.101", "192.0.2.102"))
	h.run(t)
	h.waitFor(t, "add element inet herald ep4 { 198.51.100.53 . udp . 53 . 1 : 192.0.2.102 . 5353 }")
	if got := h.ct.take(); len(got) != 0 {
		t.Errorf("the first sync cannot know stale flows, deleted %+v", got)
	}

	if _, err := h.client.DiscoveryV1().EndpointSlices("ns").Update(context.Background(),
		slice("192.0.2.101"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []dataplane.StaleFlow{{Dst: netip.MustParseAddr("198.51.100.53"), Port: 53,
		Endpoint: netip.MustParseAddrPort("192.0.2.102:5353")}}
	for {
		r := recv(t, h.reports, "a sync after the endpoint removal")
		if r.err != nil {
			continue
		}
		if got := h.ct.take(); len(got) > 0 {
			if !reflect.DeepEqual(got, want) {
				t.Errorf("deleted %+v, want %+v", got, want)
			}
			return
		}
	}
}
