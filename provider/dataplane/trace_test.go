package dataplane

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

const (
	v4 = discoveryv1.AddressTypeIPv4
	v6 = discoveryv1.AddressTypeIPv6
)

var (
	httpPorts = []discoveryv1.EndpointPort{epPort("http", v1.ProtocolTCP, 8080)}
	tcp80     = port("http", v1.ProtocolTCP, 80, 0)
)

// traceCluster is one cluster state exercising every feature; each trace
// case below sends one packet through the rules built for it.
func traceCluster() ([]*v1.Service, []*discoveryv1.EndpointSlice) {
	svcs := []*v1.Service{
		service("web", clusterIPs("198.51.100.1"), ports(tcp80)),
		service("np", clusterIPs("198.51.100.2"), svcType(v1.ServiceTypeNodePort), ports(port("http", v1.ProtocolTCP, 80, 30002))),
		service("lb", clusterIPs("198.51.100.3"), ports(port("http", v1.ProtocolTCP, 80, 30003)), lbIngress("203.0.113.3"),
			sourceRangesMod("198.51.100.128/25", "2001:db8:ffff::/48")),
		service("ext", clusterIPs("198.51.100.4"), ports(tcp80), externalIPs("203.0.113.4")),
		service("multi", clusterIPs("198.51.100.5"), ports(tcp80, port("https", v1.ProtocolTCP, 443, 0),
			port("dns", v1.ProtocolUDP, 53, 0), port("sig", v1.ProtocolSCTP, 9999, 0))),
		service("term", clusterIPs("198.51.100.6"), ports(tcp80)),
		service("allterm", clusterIPs("198.51.100.7"), ports(tcp80)),
		service("empty", clusterIPs("198.51.100.8"), ports(tcp80, port("dns", v1.ProtocolUDP, 53, 0))),
		service("etp", clusterIPs("198.51.100.9"), ports(port("http", v1.ProtocolTCP, 80, 30009)), lbIngress("203.0.113.9"), etpLocal),
		service("etpremote", clusterIPs("198.51.100.10"), ports(port("http", v1.ProtocolTCP, 80, 30010)), lbIngress("203.0.113.10"), etpLocal),
		service("itp", clusterIPs("198.51.100.11"), ports(port("http", v1.ProtocolTCP, 80, 30011)), svcType(v1.ServiceTypeNodePort), itpLocal),
		service("manual", clusterIPs("198.51.100.12"), ports(tcp80)),
		service("extname", svcType(v1.ServiceTypeExternalName), ports(tcp80)),
		service("dual", clusterIPs("2001:db8:1::13", "198.51.100.13"), ports(tcp80)),
		service("sticky", clusterIPs("198.51.100.14"), ports(tcp80), clientIPAffinity(60)),
		service("self", clusterIPs("198.51.100.15"), ports(tcp80)),
	}
	two := []ep{{"192.0.2.101", thisNode, ready}, {"192.0.2.102", otherNode, ready}}
	sl := []*discoveryv1.EndpointSlice{
		endpointSlice("web", "web-a", v4, httpPorts, two...),
		endpointSlice("np", "np-a", v4, httpPorts, two...),
		endpointSlice("lb", "lb-a", v4, httpPorts, two...),
		endpointSlice("ext", "ext-a", v4, httpPorts, two...),
		endpointSlice("multi", "multi-a", v4, []discoveryv1.EndpointPort{
			epPort("http", v1.ProtocolTCP, 8080), epPort("https", v1.ProtocolTCP, 8443),
			epPort("dns", v1.ProtocolUDP, 5353), epPort("sig", v1.ProtocolSCTP, 19999)}, two[1]),
		endpointSlice("term", "term-a", v4, httpPorts, ep{"192.0.2.111", otherNode, ready},
			ep{"192.0.2.112", otherNode, terminatingServing}, ep{"192.0.2.113", otherNode, notReady}),
		endpointSlice("allterm", "allterm-a", v4, httpPorts, ep{"192.0.2.121", otherNode, terminatingServing},
			ep{"192.0.2.122", otherNode, notReady}),
		endpointSlice("empty", "empty-a", v4, httpPorts, ep{"192.0.2.131", otherNode, notReady}),
		endpointSlice("etp", "etp-a", v4, httpPorts, two...),
		endpointSlice("etpremote", "etpremote-a", v4, httpPorts, two[1]),
		endpointSlice("itp", "itp-a", v4, httpPorts, two...),
		// a selector-less Service's hand-written slice, endpoint outside the cluster
		endpointSlice("manual", "manual-hand", v4, httpPorts, ep{"203.0.113.200", "", ready}),
		endpointSlice("dual", "dual-4", v4, httpPorts, two[0]),
		endpointSlice("dual", "dual-6", v6, httpPorts, ep{"2001:db8:2::1", thisNode, ready}),
		endpointSlice("sticky", "sticky-a", v4, httpPorts, two...),
		endpointSlice("self", "self-a", v4, httpPorts, ep{"192.0.2.150", thisNode, ready}),
	}
	return svcs, sl
}

func buildTraced(t *testing.T, node Node, opts Options) (*knftables.Fake, *tracer) {
	t.Helper()
	svcs, sl := traceCluster()
	fake := knftables.NewFake(TableFamily, TableName)
	if _, err := NewApplier(fake).Sync(context.Background(), Build(svcs, sl, node, opts)); err != nil {
		t.Fatal(err)
	}
	return fake, newTracer(t, fake, node.IPs...)
}

func dnat(masq bool, eps ...string) traceResult {
	return traceResult{verdict: "dnat", endpoints: eps, masquerade: masq}
}

var (
	both  = []string{"192.0.2.101:8080", "192.0.2.102:8080"}
	local = []string{"192.0.2.101:8080"}
)

func TestTrace(t *testing.T) {
	podCIDR := netip.MustParsePrefix("192.0.2.96/27")
	_, tr := buildTraced(t, testNode, Options{Local: LocalDetector{PodCIDRs: []netip.Prefix{podCIDR}}})
	const client = "203.0.113.50"
	const pod = "192.0.2.99"
	cases := []struct {
		name string
		p    packet
		want traceResult
	}{
		{"ClusterIP from a local pod", packet{pod, "198.51.100.1", "tcp", 80, localPod}, dnat(false, both...)},
		{"ClusterIP from the host", packet{"192.0.2.10", "198.51.100.1", "tcp", 80, hostProc}, dnat(true, both...)},
		{"ClusterIP from off-node is masqueraded", packet{client, "198.51.100.1", "tcp", 80, offNode}, dnat(true, both...)},
		{"ClusterIP wrong port untouched", packet{pod, "198.51.100.1", "tcp", 81, localPod}, traceResult{verdict: "accept"}},
		{"NodePort", packet{client, nodeIP4.String(), "tcp", 30002, offNode}, dnat(true, both...)},
		{"NodePort on another address untouched", packet{client, "198.51.100.77", "tcp", 30002, offNode}, traceResult{verdict: "accept"}},
		{"LB IP from allowed source", packet{"198.51.100.200", "203.0.113.3", "tcp", 80, offNode}, dnat(true, both...)},
		{"LB IP from other source dropped", packet{client, "203.0.113.3", "tcp", 80, offNode}, traceResult{verdict: "drop"}},
		{"ranges do not fence the ClusterIP", packet{pod, "198.51.100.3", "tcp", 80, localPod}, dnat(false, both...)},
		{"ranges do not fence the NodePort", packet{client, nodeIP4.String(), "tcp", 30003, offNode}, dnat(true, both...)},
		{"externalIP", packet{client, "203.0.113.4", "tcp", 80, offNode}, dnat(true, both...)},
		{"multi-port http", packet{pod, "198.51.100.5", "tcp", 80, localPod}, dnat(false, "192.0.2.102:8080")},
		{"multi-port https", packet{pod, "198.51.100.5", "tcp", 443, localPod}, dnat(false, "192.0.2.102:8443")},
		{"multi-port UDP", packet{pod, "198.51.100.5", "udp", 53, localPod}, dnat(false, "192.0.2.102:5353")},
		{"multi-port SCTP", packet{pod, "198.51.100.5", "sctp", 9999, localPod}, dnat(false, "192.0.2.102:19999")},
		{"UDP to a TCP port untouched", packet{pod, "198.51.100.5", "udp", 80, localPod}, traceResult{verdict: "accept"}},
		{"only ready endpoints", packet{pod, "198.51.100.6", "tcp", 80, localPod}, dnat(false, "192.0.2.111:8080")},
		{"terminating fallback", packet{pod, "198.51.100.7", "tcp", 80, localPod}, dnat(false, "192.0.2.121:8080")},
		{"no endpoints TCP reset", packet{pod, "198.51.100.8", "tcp", 80, localPod}, traceResult{verdict: "reject", rejectTCPReset: true}},
		{"no endpoints UDP unreachable", packet{pod, "198.51.100.8", "udp", 53, localPod}, traceResult{verdict: "reject"}},
		{"no endpoints from host", packet{"192.0.2.10", "198.51.100.8", "tcp", 80, hostProc}, traceResult{verdict: "reject", rejectTCPReset: true}},
		{"ETP Local LB IP", packet{client, "203.0.113.9", "tcp", 80, offNode}, dnat(false, local...)},
		{"ETP Local NodePort", packet{client, nodeIP4.String(), "tcp", 30009, offNode}, dnat(false, local...)},
		{"ETP Local ClusterIP uses all", packet{pod, "198.51.100.9", "tcp", 80, localPod}, dnat(false, both...)},
		{"ETP Local no local endpoint drops", packet{client, "203.0.113.10", "tcp", 80, offNode}, traceResult{verdict: "drop"}},
		{"ETP Local no local endpoint NodePort drops", packet{client, nodeIP4.String(), "tcp", 30010, offNode}, traceResult{verdict: "drop"}},
		{"ITP Local ClusterIP", packet{pod, "198.51.100.11", "tcp", 80, localPod}, dnat(false, local...)},
		{"ITP Local NodePort uses all", packet{client, nodeIP4.String(), "tcp", 30011, offNode}, dnat(true, both...)},
		{"manual EndpointSlice", packet{pod, "198.51.100.12", "tcp", 80, localPod}, dnat(false, "203.0.113.200:8080")},
		{"IPv6 ClusterIP", packet{"2001:db8:3::9", "2001:db8:1::13", "tcp", 80, localPod}, dnat(false, "[2001:db8:2::1]:8080")},
		{"dual-stack IPv4 half", packet{pod, "198.51.100.13", "tcp", 80, localPod}, dnat(false, local...)},
		{"affinity remembers the client's choice", packet{pod, "198.51.100.14", "tcp", 80, localPod},
			traceResult{verdict: "dnat", endpoints: both, remembered: []string{
				"aff4 192.0.2.99 . 198.51.100.14 . tcp . 80 : 192.0.2.101 . 8080 timeout 60s",
				"aff4 192.0.2.99 . 198.51.100.14 . tcp . 80 : 192.0.2.102 . 8080 timeout 60s",
			}}},
		{"hairpin is masqueraded", packet{"192.0.2.150", "198.51.100.15", "tcp", 80, localPod}, dnat(true, "192.0.2.150:8080")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr.t = t
			got := tr.trace(c.p)
			if got.verdict != c.want.verdict || !slices.Equal(got.endpoints, c.want.endpoints) ||
				got.masquerade != c.want.masquerade || !slices.Equal(got.remembered, c.want.remembered) ||
				got.rejectTCPReset != c.want.rejectTCPReset {
				t.Errorf("trace %+v:\n got %+v\nwant %+v", c.p, got, c.want)
			}
		})
	}
}

// TestTraceAffinityRemembersThenHits writes what the packet path remembers
// for a first connection into the map, as the kernel would, and traces the
// client's next connection: it must hit that entry and go to the same
// endpoint. So the update's key must be the lookup's key, which no
// hand-written entry could check.
func TestTraceAffinityRemembersThenHits(t *testing.T) {
	fake, tr := buildTraced(t, testNode, Options{})
	const client, other = "192.0.2.99", "192.0.2.98"
	first := tr.trace(packet{client, "198.51.100.14", "tcp", 80, localPod})
	if len(first.remembered) != len(both) {
		t.Fatalf("first connection remembered %q, want one entry per endpoint of %v", first.remembered, both)
	}
	for i, entry := range first.remembered {
		// the kernel keeps the one endpoint numgen picked
		tx := fake.NewTransaction()
		tx.Flush(&knftables.Map{Name: "aff4"})
		tx.Add(parseRemembered(t, entry))
		if err := fake.Run(context.Background(), tx); err != nil {
			t.Fatal(err)
		}
		tr := newTracer(t, fake, testNode.IPs...) // Run replaced the table
		got := tr.trace(packet{client, "198.51.100.14", "tcp", 80, localPod})
		if want := both[i : i+1]; got.verdict != "dnat" || !slices.Equal(got.endpoints, want) ||
			!slices.Equal(got.remembered, []string{entry}) {
			t.Errorf("after %q the client's next connection: %+v; want only %v, remembered again", entry, got, want)
		}
		if got := tr.trace(packet{other, "198.51.100.14", "tcp", 80, localPod}); !slices.Equal(got.endpoints, both) {
			t.Errorf("another client must be balanced: %+v", got)
		}
	}
}

// parseRemembered turns a traceResult.remembered entry into the element
// the kernel would hold.
func parseRemembered(t *testing.T, entry string) *knftables.Element {
	t.Helper()
	name, rest, _ := strings.Cut(entry, " ")
	key, rest, ok1 := strings.Cut(rest, " : ")
	value, _, ok2 := strings.Cut(rest, " timeout ")
	if !ok1 || !ok2 {
		t.Fatalf("not a remembered entry: %q", entry)
	}
	return &knftables.Element{Map: name, Key: strings.Split(key, " . "), Value: strings.Split(value, " . ")}
}

func TestTraceNodePortAddresses(t *testing.T) {
	node := Node{Name: thisNode, IPs: []netip.Addr{nodeIP4, netip.MustParseAddr("198.51.100.250"), nodeIP6}}
	_, tr := buildTraced(t, node, Options{NodePortCIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	if got := tr.trace(packet{"203.0.113.50", nodeIP4.String(), "tcp", 30002, offNode}); !slices.Equal(got.endpoints, both) {
		t.Errorf("NodePort on an allowed address: %+v", got)
	}
	for _, dst := range []string{"198.51.100.250", nodeIP6.String()} {
		if got := tr.trace(packet{"203.0.113.50", dst, "tcp", 30002, offNode}); got.verdict != "accept" {
			t.Errorf("NodePort on %s outside --nodeport-addresses: %+v", dst, got)
		}
	}
}

func TestTraceIPv6NodePortAndLB(t *testing.T) {
	svcs := []*v1.Service{service("v6", clusterIPs("2001:db8:1::20"), ports(port("http", v1.ProtocolTCP, 80, 30020)),
		lbIngress("2001:db8:5::20"), sourceRangesMod("2001:db8:6::/48"))}
	sl := []*discoveryv1.EndpointSlice{endpointSlice("v6", "v6-a", v6, httpPorts, ep{"2001:db8:2::1", otherNode, ready})}
	fake := knftables.NewFake(TableFamily, TableName)
	if _, err := NewApplier(fake).Sync(context.Background(), Build(svcs, sl, testNode, Options{})); err != nil {
		t.Fatal(err)
	}
	tr := newTracer(t, fake, testNode.IPs...)
	want := dnat(true, "[2001:db8:2::1]:8080")
	for _, p := range []packet{
		{"2001:db8:6::1", nodeIP6.String(), "tcp", 30020, offNode},
		{"2001:db8:6::1", "2001:db8:5::20", "tcp", 80, offNode},
	} {
		if got := tr.trace(p); got.verdict != want.verdict || !slices.Equal(got.endpoints, want.endpoints) || !got.masquerade {
			t.Errorf("%+v: got %+v", p, got)
		}
	}
	if got := tr.trace(packet{"2001:db8:7::1", "2001:db8:5::20", "tcp", 80, offNode}); got.verdict != "drop" {
		t.Errorf("source outside ranges: %+v", got)
	}
	if got := tr.trace(packet{"203.0.113.1", nodeIP4.String(), "tcp", 30020, offNode}); got.verdict != "reject" {
		t.Errorf("IPv4 NodePort of an IPv6-only service must reject: %+v", got)
	}
}

func TestTraceMasqueradeOptions(t *testing.T) {
	_, tr := buildTraced(t, testNode, Options{})
	if got := tr.trace(packet{"203.0.113.50", "198.51.100.1", "tcp", 80, offNode}); got.masquerade {
		t.Errorf("without pod CIDRs ClusterIP traffic is not masqueraded: %+v", got)
	}
	_, tr = buildTraced(t, testNode, Options{MasqueradeAll: true})
	if got := tr.trace(packet{"192.0.2.99", "198.51.100.1", "tcp", 80, localPod}); !got.masquerade {
		t.Errorf("MasqueradeAll: %+v", got)
	}
}

func TestExternalNameGetsNoRules(t *testing.T) {
	svcs := []*v1.Service{service("extname", svcType(v1.ServiceTypeExternalName), ports(tcp80))}
	sl := []*discoveryv1.EndpointSlice{endpointSlice("extname", "x", v4, httpPorts, ep{"192.0.2.1", "", ready})}
	r := Build(svcs, sl, Node{Name: thisNode}, Options{})
	for name, els := range r.Elements {
		if len(els) > 0 {
			t.Errorf("%s has elements: %v", name, els)
		}
	}
}
