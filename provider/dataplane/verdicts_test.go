package dataplane

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

// namesChain reports whether e's value is a verdict that jumps or goes to
// a chain: adding such an element makes the kernel validate the whole
// table at commit (see pickKind), at a cost in proportion to every element
// of every verdict map.
func namesChain(e Element) bool {
	return len(e.Value) == 1 && (strings.HasPrefix(e.Value[0], "goto ") || strings.HasPrefix(e.Value[0], "jump "))
}

// verdictContainers may hold elements that name chains: the affinity maps
// (an element changes only when its Service gains or loses ClientIP
// affinity or all its endpoints) and those of endpoint counts beyond
// PrecreatedPickChains.
func verdictContainers(f ipFamily) []string {
	out := []string{f.affSvc(), f.affNP()}
	for _, k := range pickKinds {
		out = append(out, f.more(k))
	}
	return out
}

// TestEndpointCountChangesWriteNoVerdicts: with every feature in use, no
// per-Service element names a chain outside verdictContainers, and a new
// endpoint for every Service at once is a partial sync whose changes name
// no chain, so the kernel does not validate the table.
func TestEndpointCountChangesWriteNoVerdicts(t *testing.T) {
	for name, opts := range map[string]Options{
		"no detection":   {},
		"pod ranges":     {Local: LocalDetector{PodCIDRs: []netip.Prefix{podCIDR4}}},
		"masquerade all": {MasqueradeAll: true, Local: LocalDetector{Interface: "veth", InterfacePrefix: true}},
		"service ranges": {ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}},
	} {
		t.Run(name, func(t *testing.T) {
			svcs, sl := traceCluster()
			b := NewBuilder()
			before := buildObjects(b, svcs, sl, testNode, opts)
			allowed := map[string]bool{}
			for _, f := range families {
				for _, c := range verdictContainers(f) {
					allowed[c] = true
				}
			}
			verdicts := 0
			for c, els := range before.Elements {
				for _, e := range els {
					switch {
					case namesChain(e) && !allowed[c]:
						t.Errorf("%s holds %v -> %v", c, e.Key, e.Value)
					case namesChain(e):
						verdicts++
					}
				}
			}
			if verdicts == 0 {
				t.Error("the cluster has no affinity element: the check above proves nothing about them")
			}

			after := buildObjects(b, svcs, withOneMoreEndpoint(sl), testNode, opts)
			if newChains, ok := chainsOnlyChange(before, after); !ok || len(newChains) > 0 {
				t.Fatalf("one more endpoint per Service changes the skeleton (partial %t, new chains %v)", ok, newChains)
			}
			changes, _ := partialChanges(before, after)
			moved := 0
			for _, c := range changes {
				if namesChain(c.Element) {
					t.Errorf("change %+v names a chain", c)
				}
				if strings.HasPrefix(c.Container, "svc") || strings.HasPrefix(c.Container, "np") || strings.HasPrefix(c.Container, "pod") {
					moved++
				}
			}
			if moved == 0 {
				t.Errorf("no frontend changed its endpoint count: %+v", changes)
			}
		})
	}
}

// withOneMoreEndpoint copies each slice with its first endpoint repeated
// under a new address.
func withOneMoreEndpoint(sl []*discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	out := make([]*discoveryv1.EndpointSlice, len(sl))
	for i, s := range sl {
		c := s.DeepCopy()
		e := c.Endpoints[0].DeepCopy()
		e.Addresses = []string{fmt.Sprintf("198.51.100.%d", 200+i)}
		if c.AddressType == discoveryv1.AddressTypeIPv6 {
			e.Addresses = []string{fmt.Sprintf("2001:db8:9::%x", i+1)}
		}
		c.Endpoints = append(c.Endpoints, *e)
		out[i] = c
	}
	return out
}

// TestTraceBeyondPrecreatedCounts: a Service with more endpoints than the
// pick sets cover is picked through the verdict map of larger counts, by
// ClusterIP and NodePort, and back in the sets once it shrinks.
func TestTraceBeyondPrecreatedCounts(t *testing.T) {
	svc := service("big", clusterIPs("198.51.100.1"), svcType(v1.ServiceTypeNodePort), ports(port("http", v1.ProtocolTCP, 80, 30080)))
	for _, n := range []int{PrecreatedPickChains + 1, PrecreatedPickChains} {
		eps := make([]ep, n)
		want := make([]string, n)
		for i := range eps {
			eps[i] = ep{fmt.Sprintf("192.0.2.%d", 100+i), otherNode, ready}
			want[i] = eps[i].ip + ":8080"
		}
		slices.Sort(want)
		r := Build([]*v1.Service{svc}, []*discoveryv1.EndpointSlice{endpointSlice("big", "big-a", v4, httpPorts, eps...)}, testNode, Options{})
		more := families[0].more(pickKind{})
		if got := len(r.Elements[more]); got != btoi(n > PrecreatedPickChains) {
			t.Errorf("%d endpoints: %d elements in %s", n, got, more)
		}
		fake := knftables.NewFake(TableFamily, TableName)
		syncOK(t, NewApplier(fake), r)
		tr := newTracer(t, fake, nodeIP4)
		for _, p := range []packet{{"203.0.113.50", "198.51.100.1", "tcp", 80, offNode}, {"203.0.113.50", nodeIP4.String(), "tcp", 30080, offNode}} {
			if got := tr.trace(p); got.verdict != "dnat" || !slices.Equal(got.endpoints, want) {
				t.Errorf("%d endpoints, %+v: %s to %d endpoints, want all", n, p, got.verdict, len(got.endpoints))
			}
		}
	}
}
