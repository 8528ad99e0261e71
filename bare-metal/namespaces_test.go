package baremetal

import (
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldlb/herald/bare-metal/ipam"
	"github.com/heraldlb/herald/provider"
)

// Namespace labels reach the allocator: a pool selecting Namespaces by
// label serves only their Services, relabelling keeps existing addresses,
// and nothing is allocated before the Namespaces are known.
func TestNamespaceLabelsSelectPools(t *testing.T) {
	team, err := labels.Parse("team=blue")
	if err != nil {
		t.Fatal(err)
	}
	pools := []ipam.Pool{{Name: "blue", AutoAssign: true, NamespaceSelectors: []labels.Selector{team},
		Ranges: []ipam.Range{{First: netip.MustParseAddr("192.0.2.10"), Last: netip.MustParseAddr("192.0.2.12")}}}}
	namespaces := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	blue := &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns", Labels: map[string]string{"team": "blue"}}}
	if err := namespaces.Add(blue); err != nil {
		t.Fatal(err)
	}
	var nsSynced atomic.Bool
	b := newBackend(t, pools, prometheus.NewRegistry())
	start(t, b, provider.Env{
		Services:         serviceLister(t),
		ServicesSynced:   func() bool { return true },
		Namespaces:       corelisters.NewNamespaceLister(namespaces),
		NamespacesSynced: nsSynced.Load,
		Recorder:         record.NewFakeRecorder(100),
	})
	if _, err := ensureNow(t, b, lbService("a", 0)); !errors.Is(err, ErrStateNotRecovered) {
		t.Fatalf("Ensure before the Namespaces synced: %v, want ErrStateNotRecovered", err)
	}
	nsSynced.Store(true)
	ips, err := ensure(t, b, lbService("a", 0))
	if err != nil || len(ips) != 1 || ips[0] != "192.0.2.10" {
		t.Fatalf("a in a blue Namespace: %v %v", ips, err)
	}
	plain := blue.DeepCopy()
	plain.Labels = nil
	if err := namespaces.Update(plain); err != nil {
		t.Fatal(err)
	}
	if again, err := ensure(t, b, lbService("a", 0)); err != nil || again[0] != ips[0] {
		t.Errorf("a after its Namespace was relabelled: %v %v, want it to keep %s", again, err, ips[0])
	}
	var failed *AllocationError
	if _, err := ensure(t, b, lbService("b", 0)); !errors.As(err, &failed) || !errors.Is(err, ipam.ErrFamilyUnavailable) {
		t.Errorf("b in a Namespace the pool no longer selects: %v, want an AllocationError", err)
	}
}
