package dataplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

var tcpHTTP = []discoveryv1.EndpointPort{epPort("http", v1.ProtocolTCP, 8080)}

func webService() *v1.Service {
	return service("web", clusterIPs("198.51.100.1"), ports(port("http", v1.ProtocolTCP, 80, 0)))
}

func webSlice(eps ...ep) *discoveryv1.EndpointSlice {
	return endpointSlice("web", "web-1", discoveryv1.AddressTypeIPv4, tcpHTTP, eps...)
}

// sortedDump is a dump with its lines sorted: element order in the fake follows
// the order of adds, which differs between a full and a partial sync.
func sortedDump(dump string) string {
	lines := strings.Split(dump, "\n")
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// elementLines returns the "add element" lines of a dump: the part that
// depends on Services, the rest being the fixed skeleton.
func elementLines(dump string) []string {
	var out []string
	for _, l := range strings.Split(dump, "\n") {
		if strings.HasPrefix(l, "add element ") {
			out = append(out, strings.TrimPrefix(l, "add element inet herald "))
		}
	}
	slices.Sort(out)
	return out
}

func syncOK(t *testing.T, a *Applier, r *Ruleset) SyncResult {
	t.Helper()
	res, err := a.Sync(context.Background(), r)
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return res
}

func TestFullSyncDump(t *testing.T) {
	fake := knftables.NewFake(TableFamily, TableName)
	a := NewApplier(fake)
	r := Build([]*v1.Service{webService()},
		[]*discoveryv1.EndpointSlice{webSlice(ep{"192.0.2.102", otherNode, ready}, ep{"192.0.2.101", thisNode, ready})},
		testNode, Options{})
	if res := syncOK(t, a, r); !res.Full {
		t.Fatalf("first sync must be full")
	}
	want := []string{
		`ep4 { 198.51.100.1 . tcp . 80 . 0 : 192.0.2.101 . 8080 }`,
		`ep4 { 198.51.100.1 . tcp . 80 . 1 : 192.0.2.102 . 8080 }`,
		`hairpin4 { 192.0.2.101 . 192.0.2.101 }`,
		`nodeport-ips4 { 192.0.2.10 }`,
		`nodeport-ips6 { 2001:db8::10 }`,
		`svc4 { 198.51.100.1 . tcp . 80 }`,
		`svc4-2 { 198.51.100.1 . tcp . 80 comment "ns/web:http" }`,
	}
	if got := elementLines(fake.Dump()); !slices.Equal(got, want) {
		t.Errorf("elements:\n got %q\nwant %q", got, want)
	}
	if !strings.Contains(fake.Dump(), "add rule inet herald pick4-2 meta l4proto { tcp, udp, sctp } dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @ep4\n") {
		t.Errorf("pick chain missing:\n%s", fake.Dump())
	}
}

// TestPartialEqualsFull checks the central promise of partial sync: after any
// sequence of partial syncs the table is exactly what a full sync writes.
func TestPartialEqualsFull(t *testing.T) {
	steps := []struct {
		name   string
		svcs   []*v1.Service
		slices []*discoveryv1.EndpointSlice
		full   bool
	}{
		{"first", []*v1.Service{webService()}, nil, true},
		{"one endpoint", []*v1.Service{webService()}, []*discoveryv1.EndpointSlice{webSlice(ep{"192.0.2.101", thisNode, ready})}, false},
		{"scale to three", []*v1.Service{webService()}, []*discoveryv1.EndpointSlice{
			webSlice(ep{"192.0.2.101", thisNode, ready}, ep{"192.0.2.102", otherNode, ready}, ep{"192.0.2.103", otherNode, ready})}, false},
		{"add LB with affinity", []*v1.Service{webService(),
			service("lb", clusterIPs("198.51.100.2"), ports(port("http", v1.ProtocolTCP, 80, 30080)), lbIngress("203.0.113.2"), clientIPAffinity(30))},
			[]*discoveryv1.EndpointSlice{webSlice(ep{"192.0.2.101", thisNode, ready}),
				endpointSlice("lb", "lb-1", discoveryv1.AddressTypeIPv4, tcpHTTP, ep{"192.0.2.104", otherNode, ready})},
			true}, // a new affinity timeout adds a chain
		{"LB loses its endpoint", []*v1.Service{webService(),
			service("lb", clusterIPs("198.51.100.2"), ports(port("http", v1.ProtocolTCP, 80, 30080)), lbIngress("203.0.113.2"), clientIPAffinity(30))},
			[]*discoveryv1.EndpointSlice{webSlice(ep{"192.0.2.101", thisNode, ready})}, false},
		{"all gone", nil, nil, false},
	}
	fake := knftables.NewFake(TableFamily, TableName)
	a := NewApplier(fake)
	for _, st := range steps {
		r := Build(st.svcs, st.slices, testNode, Options{})
		res := syncOK(t, a, r)
		if res.Full != st.full {
			t.Fatalf("%s: full=%t", st.name, res.Full)
		}
		if tx := fake.LastTransaction.String(); !st.full && (strings.Contains(tx, "add rule") || strings.Contains(tx, "table")) {
			t.Errorf("%s: partial sync touched rules or the table:\n%s", st.name, tx)
		}
		ref := knftables.NewFake(TableFamily, TableName)
		syncOK(t, NewApplier(ref), r)
		if got, want := sortedDump(fake.Dump()), sortedDump(ref.Dump()); got != want {
			t.Errorf("%s: partial result differs from full:\n got %s\nwant %s", st.name, got, want)
		}
	}
}

func TestPartialSyncIsSmall(t *testing.T) {
	fake := knftables.NewFake(TableFamily, TableName)
	a := NewApplier(fake)
	var svcs []*v1.Service
	var sls []*discoveryv1.EndpointSlice
	for i := range 50 {
		name := fmt.Sprintf("s%d", i)
		svcs = append(svcs, service(name, clusterIPs(ip4(198, 51, 100, i+1)), ports(port("http", v1.ProtocolTCP, 80, 0))))
		sls = append(sls, endpointSlice(name, name+"-1", discoveryv1.AddressTypeIPv4, tcpHTTP,
			ep{ip4(192, 0, 2, i+1), otherNode, ready}))
	}
	syncOK(t, a, Build(svcs, sls, testNode, Options{}))
	// one more endpoint for one service: it moves from set svc4-1 to
	// svc4-2, and it gains one endpoint element.
	sls[7] = endpointSlice(svcs[7].Name, svcs[7].Name+"-1", discoveryv1.AddressTypeIPv4, tcpHTTP,
		ep{ip4(192, 0, 2, 8), otherNode, ready}, ep{ip4(192, 0, 2, 200), otherNode, ready})
	res := syncOK(t, a, Build(svcs, sls, testNode, Options{}))
	if res.Full || res.Operations > 8 {
		t.Errorf("want a small partial sync, got %+v:\n%s", res, fake.LastTransaction)
	}
	if res := syncOK(t, a, Build(svcs, sls, testNode, Options{})); res.Operations != 0 {
		t.Errorf("no change must send nothing, got %+v", res)
	}
}

func TestFailedSyncForcesFull(t *testing.T) {
	fake := knftables.NewFake(TableFamily, TableName)
	a := NewApplier(fake)
	svcs := []*v1.Service{webService()}
	syncOK(t, a, Build(svcs, []*discoveryv1.EndpointSlice{webSlice(ep{"192.0.2.101", thisNode, ready})}, testNode, Options{}))

	// Someone deletes herald's table behind its back: the partial sync fails.
	tx := fake.NewTransaction()
	tx.Delete(&knftables.Table{})
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	r := Build(svcs, []*discoveryv1.EndpointSlice{webSlice(ep{"192.0.2.102", thisNode, ready})}, testNode, Options{})
	_, err := a.Sync(context.Background(), r)
	if !errors.Is(err, ErrApply) || !knftables.IsNotFound(err) {
		t.Fatalf("want ErrApply wrapping not-found, got %v", err)
	}
	if res := syncOK(t, a, r); !res.Full {
		t.Fatalf("sync after a failure must be full")
	}
	ref := knftables.NewFake(TableFamily, TableName)
	syncOK(t, NewApplier(ref), r)
	if sortedDump(fake.Dump()) != sortedDump(ref.Dump()) {
		t.Errorf("recovered table differs:\n%s\nwant\n%s", fake.Dump(), ref.Dump())
	}
}

func TestFullSyncReplacesTable(t *testing.T) {
	fake := knftables.NewFake(TableFamily, TableName)
	r := Build([]*v1.Service{webService()}, []*discoveryv1.EndpointSlice{webSlice(ep{"192.0.2.101", thisNode, ready})}, testNode, Options{})
	syncOK(t, NewApplier(fake), r)

	// What an older herald, or someone else, left in the table.
	tx := fake.NewTransaction()
	tx.Add(&knftables.Chain{Name: "old-chain"})
	tx.Add(&knftables.Map{Name: "old-map", Type: "ipv4_addr : verdict"})
	tx.Add(&knftables.Element{Map: "old-map", Key: []string{"192.0.2.1"}, Value: []string{"goto old-chain"}})
	tx.Add(&knftables.Rule{Chain: "services", Rule: "ip daddr 192.0.2.1 drop"})
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	// A restarted agent starts with a full sync.
	syncOK(t, NewApplier(fake), r)
	ref := knftables.NewFake(TableFamily, TableName)
	syncOK(t, NewApplier(ref), r)
	if got, want := fake.Dump(), ref.Dump(); got != want {
		t.Errorf("full sync left foreign content:\n%s", got)
	}
}

func TestPartialSyncPurgesStaleAffinity(t *testing.T) {
	fake := knftables.NewFake(TableFamily, TableName)
	a := NewApplier(fake)
	svcs := []*v1.Service{service("web", clusterIPs("198.51.100.1"), ports(port("http", v1.ProtocolTCP, 80, 0)), clientIPAffinity(30))}
	syncOK(t, a, Build(svcs, []*discoveryv1.EndpointSlice{webSlice(ep{"192.0.2.101", thisNode, ready}, ep{"192.0.2.102", otherNode, ready})}, testNode, Options{}))

	// What the packet path remembered for two clients.
	tx := fake.NewTransaction()
	tx.Add(&knftables.Element{Map: "aff4", Key: []string{"203.0.113.9", "198.51.100.1", "tcp", "80"}, Value: []string{"192.0.2.101", "8080"}})
	tx.Add(&knftables.Element{Map: "aff4", Key: []string{"203.0.113.8", "198.51.100.1", "tcp", "80"}, Value: []string{"192.0.2.102", "8080"}})
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	res := syncOK(t, a, Build(svcs, []*discoveryv1.EndpointSlice{webSlice(ep{"192.0.2.101", thisNode, ready})}, testNode, Options{}))
	if res.Full {
		t.Fatalf("want a partial sync")
	}
	dump := fake.Dump()
	if !strings.Contains(dump, "aff4 { 203.0.113.9 . 198.51.100.1 . tcp . 80 : 192.0.2.101 . 8080 }") {
		t.Errorf("valid affinity entry lost:\n%s", dump)
	}
	if strings.Contains(dump, "203.0.113.8") {
		t.Errorf("affinity entry to a gone endpoint kept:\n%s", dump)
	}
}

func ip4(a, b, c, d int) string { return fmt.Sprintf("%d.%d.%d.%d", a, b, c, d) }
