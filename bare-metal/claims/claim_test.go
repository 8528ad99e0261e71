package claims

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/bare-metal/ipam"
)

var claimNow = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// holderOf is a claim holder of ns/name renewed age ago, with an optional
// sharing key and TCP ports.
func holderOf(service string, age time.Duration, key string, ports ...int32) holder {
	req := ipam.Request{Service: service, SharingKey: key}
	for _, p := range ports {
		req.Ports = append(req.Ports, ipam.Port{Protocol: "TCP", Port: p})
	}
	return holderFor(req, "uid-"+service, claimNow.Add(-age))
}

func claimOf(ip string, holders ...holder) claim {
	return claim{ip: netip.MustParseAddr(ip), ours: true, holders: holders}
}

func TestClaimObjectRoundTrip(t *testing.T) {
	h := holderOf("ns/a", 0, "k", 80, 443)
	obj, err := newClaim(netip.MustParseAddr("2001:db8::1"), h)
	if err != nil {
		t.Fatal(err)
	}
	if obj.Name != "2001:db8::1" || obj.Labels[networkingv1.LabelManagedBy] != Manager ||
		obj.Labels[networkingv1.LabelIPAddressFamily] != "IPv6" {
		t.Errorf("claim object metadata = %+v", obj.ObjectMeta)
	}
	if ref := obj.Spec.ParentRef; ref == nil || ref.Resource != "services" || ref.Namespace != "ns" || ref.Name != "a" || ref.Group != "" {
		t.Errorf("parentRef = %+v", obj.Spec.ParentRef)
	}
	c, err := readClaim(obj)
	if err != nil || !c.ours || len(c.holders) != 1 || !c.holders[0].sameUse(h) || !c.holders[0].Renewed.Equal(h.Renewed) {
		t.Fatalf("readClaim = %+v, %v", c, err)
	}
	if got := c.reservation(); len(got) != 1 || got[0].SharingKey != "k" || !slices.Equal(got[0].Ports, []ipam.Port{{Protocol: "TCP", Port: 80}, {Protocol: "TCP", Port: 443}}) {
		t.Errorf("reservation = %+v", got)
	}
}

func TestReadClaim(t *testing.T) {
	foreign := &networkingv1.IPAddress{
		ObjectMeta: metav1.ObjectMeta{Name: "203.0.113.7", Labels: map[string]string{networkingv1.LabelManagedBy: "ipallocator.k8s.io"}},
		Spec:       networkingv1.IPAddressSpec{ParentRef: &networkingv1.ParentReference{Resource: "services", Namespace: "default", Name: "kubernetes"}},
	}
	c, err := readClaim(foreign)
	if err != nil || c.ours || len(c.holders) != 1 || c.holders[0].SharingKey != "" {
		t.Errorf("a ClusterIP's IPAddress reads as %+v, %v; want one holder that shares with no one", c, err)
	}
	if _, err := readClaim(&networkingv1.IPAddress{ObjectMeta: metav1.ObjectMeta{Name: "nope"}}); !errors.Is(err, ErrNotAClaim) {
		t.Errorf("bad name: %v", err)
	}
	bad := foreign.DeepCopy()
	bad.Labels[networkingv1.LabelManagedBy] = Manager
	bad.Annotations = map[string]string{AnnotationHolders: "{"}
	if _, err := readClaim(bad); err == nil {
		t.Error("a malformed holders annotation was accepted")
	}
}

func TestJoin(t *testing.T) {
	const grace = time.Minute
	tests := []struct {
		name    string
		c       claim
		h       holder
		shown   bool
		want    []string // services holding after the write; nil: no write
		claimed bool
	}{
		{name: "held and fresh: no write", c: claimOf("192.0.2.1", holderOf("ns/a", 0, "")), h: holderOf("ns/a", 0, ""), want: nil},
		{name: "held, old renewal, shown in status: no write", c: claimOf("192.0.2.1", holderOf("ns/a", time.Hour, "")), h: holderOf("ns/a", 0, ""), shown: true, want: nil},
		{name: "held, old renewal, not shown yet: renewed", c: claimOf("192.0.2.1", holderOf("ns/a", 40*time.Second, "")), h: holderOf("ns/a", 0, ""), want: []string{"ns/a"}},
		{name: "held, ports changed: rewritten", c: claimOf("192.0.2.1", holderOf("ns/a", 0, "", 80)), h: holderOf("ns/a", 0, "", 81), want: []string{"ns/a"}},
		{name: "another holder without sharing: lost", c: claimOf("192.0.2.1", holderOf("ns/x", 0, "")), h: holderOf("ns/a", 0, ""), claimed: true},
		{name: "same key, other ports: joined", c: claimOf("192.0.2.1", holderOf("ns/x", 0, "k", 80)), h: holderOf("ns/a", 0, "k", 443), want: []string{"ns/x", "ns/a"}},
		{name: "same key, same port: lost", c: claimOf("192.0.2.1", holderOf("ns/x", 0, "k", 80)), h: holderOf("ns/a", 0, "k", 80), claimed: true},
		{name: "held, new ports clash with a co-holder: lost", c: claimOf("192.0.2.1", holderOf("ns/x", 0, "k", 80), holderOf("ns/a", 0, "k", 443)), h: holderOf("ns/a", 0, "k", 80), claimed: true},
		{name: "another controller's IPAddress: lost", c: claim{ip: netip.MustParseAddr("192.0.2.1"), holders: []holder{{Service: "IPAddress 192.0.2.1"}}}, h: holderOf("ns/a", 0, "k"), claimed: true},
		{name: "empty claim: joined", c: claimOf("192.0.2.1"), h: holderOf("ns/a", 0, ""), want: []string{"ns/a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := join(tt.c, tt.h, tt.shown, claimNow, grace)
			var lost *ClaimedError
			if tt.claimed {
				if !errors.As(err, &lost) || lost.Addr != tt.c.ip || len(lost.Holders) != len(tt.c.holders) {
					t.Fatalf("join = %v, %v; want a ClaimedError naming the claim's holders", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("join: %v", err)
			}
			if names := holderNames(got); !slices.Equal(names, tt.want) {
				t.Fatalf("holders after join = %v, want %v", names, tt.want)
			}
		})
	}
}

func holderNames(hs []holder) []string {
	if hs == nil {
		return nil
	}
	names := []string{}
	for _, h := range hs {
		names = append(names, h.Service)
	}
	return names
}

func TestLeave(t *testing.T) {
	c := claimOf("192.0.2.1", holderOf("ns/x", 0, "k", 80), holderOf("ns/a", 0, "k", 443))
	if got, ok := leave(c, "ns/a", ""); !ok || !slices.Equal(holderNames(got), []string{"ns/x"}) {
		t.Errorf("leave ns/a = %v, %v", holderNames(got), ok)
	}
	if _, ok := leave(c, "ns/b", ""); ok {
		t.Error("ns/b left a claim it does not hold")
	}
	if got, ok := leave(claimOf("192.0.2.1", holderOf("ns/a", 0, "")), "ns/a", "uid-ns/a"); !ok || len(got) != 0 {
		t.Errorf("the last holder leaving leaves %v", got)
	}
	if _, ok := leave(claimOf("192.0.2.1", holderOf("ns/a", 0, "")), "ns/a", "uid-of-a-deleted-ns/a"); ok {
		t.Error("a deleted Service took the claim of a new one of the same name")
	}
}

func TestStaleHolders(t *testing.T) {
	const grace = time.Minute
	ip := "192.0.2.1"
	shows := ServiceView{UID: "uid-ns/a", Shows: []netip.Addr{netip.MustParseAddr(ip)}}
	tests := []struct {
		name   string
		holder holder
		view   *ServiceView // nil: the Service is gone
		stale  bool
	}{
		{name: "shown in status", holder: holderOf("ns/a", time.Hour, ""), view: &shows},
		{name: "gone, within grace", holder: holderOf("ns/a", 30*time.Second, "")},
		{name: "gone, after grace", holder: holderOf("ns/a", 2*time.Minute, ""), stale: true},
		{name: "not shown, within grace (status write in flight)", holder: holderOf("ns/a", 30*time.Second, ""), view: &ServiceView{UID: "uid-ns/a"}},
		{name: "not shown, after grace (lost the status race)", holder: holderOf("ns/a", 2*time.Minute, ""), view: &ServiceView{UID: "uid-ns/a"}, stale: true},
		{name: "same name, another Service, after grace", holder: holderOf("ns/a", 2*time.Minute, ""), view: &ServiceView{UID: "other", Shows: shows.Shows}, stale: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lookup := func(string) (ServiceView, bool) {
				if tt.view == nil {
					return ServiceView{}, false
				}
				return *tt.view, true
			}
			got := staleHolders(claimOf(ip, tt.holder), lookup, claimNow, grace)
			if (len(got) == 1) != tt.stale {
				t.Fatalf("stale = %v, want stale %v", got, tt.stale)
			}
		})
	}
}
