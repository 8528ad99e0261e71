package v1alpha1

import (
	"math"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/json"
)

func TestAddToSchemeRegistersKinds(t *testing.T) {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"IPAddressPool", "IPAddressPoolList"} {
		gvk := SchemeGroupVersion.WithKind(kind)
		if !s.Recognizes(gvk) {
			t.Errorf("scheme does not recognize %v", gvk)
		}
	}
	gvks, _, err := s.ObjectKinds(&IPAddressPool{})
	if err != nil || len(gvks) != 1 || gvks[0].Group != "herald.dev" || gvks[0].Version != "v1alpha1" {
		t.Errorf("ObjectKinds(IPAddressPool) = %v, %v", gvks, err)
	}
	if got := Resource("ipaddresspools").String(); got != "ipaddresspools.herald.dev" {
		t.Errorf("Resource = %q", got)
	}
}

func TestNewAddressCounts(t *testing.T) {
	tests := []struct {
		name         string
		total, inUse uint64
		want         AddressCounts
	}{
		{"ipv4 /24", 256, 3, AddressCounts{Total: 256, InUse: 3, Free: 253}},
		{"empty", 0, 0, AddressCounts{}},
		{"in use above total after a shrink", 4, 6, AddressCounts{Total: 4, InUse: 6, Free: 0}},
		{"exactly 2^63-1", math.MaxInt64, 1, AddressCounts{Total: MaxCount, InUse: 1, Free: MaxCount - 1}},
		{"2^63 saturates", 1 << 63, 1, AddressCounts{Total: MaxCount, InUse: 1, Free: MaxCount}},
		{"ipv6 /64 saturated by the allocator", math.MaxUint64, 10, AddressCounts{Total: MaxCount, InUse: 10, Free: MaxCount}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NewAddressCounts(tt.total, tt.inUse); got != tt.want {
				t.Errorf("NewAddressCounts(%d, %d) = %+v, want %+v", tt.total, tt.inUse, got, tt.want)
			}
		})
	}
}

func TestAutoAssignEnabled(t *testing.T) {
	no, yes := false, true
	for _, tt := range []struct {
		v    *bool
		want bool
	}{{nil, true}, {&yes, true}, {&no, false}} {
		if got := (&IPAddressPoolSpec{AutoAssign: tt.v}).AutoAssignEnabled(); got != tt.want {
			t.Errorf("AutoAssign %v: got %v, want %v", tt.v, got, tt.want)
		}
	}
}

// TestJSONNamesAndDeepCopy pins the field names users write (MetalLB's) and
// checks that DeepCopy shares no memory with the original.
func TestJSONNamesAndDeepCopy(t *testing.T) {
	in := []byte(`{"apiVersion":"herald.dev/v1alpha1","kind":"IPAddressPool","metadata":{"name":"p"},
	"spec":{"addresses":["192.0.2.0/28","2001:db8::1-2001:db8::ff"],"autoAssign":false,"avoidBuggyIPs":true,
	"serviceAllocation":{"priority":2,"namespaces":["a"],"namespaceSelectors":[{"matchLabels":{"team":"x"}}],
	"serviceSelectors":[{"matchLabels":{"app":"y"}}]}},
	"status":{"observedGeneration":3,"ipv4":{"total":16,"inUse":1,"free":15},
	"conditions":[{"type":"Ready","status":"True","reason":"Valid","message":"","lastTransitionTime":"2026-01-02T03:04:05Z"}]}}`)
	var p IPAddressPool
	if err := json.Unmarshal(in, &p); err != nil {
		t.Fatal(err)
	}
	sa := p.Spec.ServiceAllocation
	if p.Spec.AutoAssignEnabled() || !p.Spec.AvoidBuggyIPs || len(p.Spec.Addresses) != 2 || sa == nil ||
		sa.Priority != 2 || sa.Namespaces[0] != "a" || sa.NamespaceSelectors[0].MatchLabels["team"] != "x" ||
		sa.ServiceSelectors[0].MatchLabels["app"] != "y" || p.Status.IPv4.Free != 15 || p.Status.IPv6 != nil ||
		p.Status.Conditions[0].Type != ConditionReady {
		t.Fatalf("decoded %+v", p)
	}

	c := p.DeepCopy()
	c.Spec.Addresses[0] = "198.51.100.0/24"
	*c.Spec.AutoAssign = true
	c.Spec.ServiceAllocation.NamespaceSelectors[0].MatchLabels["team"] = "z"
	c.Status.IPv4.Free = 0
	c.Status.Conditions[0].Status = metav1.ConditionFalse
	if p.Spec.Addresses[0] != "192.0.2.0/28" || *p.Spec.AutoAssign || sa.NamespaceSelectors[0].MatchLabels["team"] != "x" ||
		p.Status.IPv4.Free != 15 || p.Status.Conditions[0].Status != metav1.ConditionTrue {
		t.Errorf("DeepCopy shares memory with the original: %+v", p)
	}
	var _ runtime.Object = (*IPAddressPoolList)(nil)
}
