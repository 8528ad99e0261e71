package agent

import (
	"net/netip"
	"slices"
	"testing"
	"time"
	"unsafe"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// TestCacheHoldsCompactObjects: through the informers, the cache holds
// what the data plane reads of every Service and EndpointSlice, and the
// Service itself, slimmed, only where the speaker reads it.
func TestCacheHoldsCompactObjects(t *testing.T) {
	managed := []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply,
		FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(`{"f:spec":{}}`)}}
	lb := webService()
	lb.ManagedFields = managed
	lb.Spec.Selector = map[string]string{"app": "web"}
	lb.Annotations = map[string]string{v1.LastAppliedConfigAnnotation: `{"kind":"Service"}`, "herald.dev/keep": "yes"}
	plain := namedService("plain", "198.51.100.2")
	// no longer a LoadBalancer, still carrying the speaker's condition
	former := namedService("former", "198.51.100.3")
	former.Status.Conditions = []metav1.Condition{{Type: "herald.dev/Announced", Status: metav1.ConditionTrue}}

	sl := webSlice("192.0.2.101", "node-b", "192.0.2.102", "node-c")
	sl.ManagedFields = managed
	sl.Annotations = map[string]string{v1.EndpointsLastChangeTriggerTime: t0.Format(time.RFC3339Nano)}
	sl.Endpoints[0].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "a"}}}
	sl.Endpoints[1].Conditions.Ready = ptr.To(false)

	// built apart, so that its node name is a string of its own
	onB := namedSlice("other-1", "other", "192.0.2.103", string([]byte("node-b")))

	h := newHarness(t, testNode(), lb, plain, former, sl, onB)
	h.startInformers(t)
	src := h.agent.source

	got := src.Service("ns", "web")
	if got == nil || got.Name != "web" || !slices.Equal(got.LoadBalancerIPs, []netip.Addr{netip.MustParseAddr("203.0.113.1")}) ||
		!got.ExternalLocal || got.HealthCheckNodePort != 32000 || len(got.Ports) != 1 || got.Ports[0].NodePort != 30080 {
		t.Fatalf("cached Service %+v lost what the data plane reads", got)
	}
	full := src.cached("ns", "web").full
	switch {
	case full == nil:
		t.Fatal("a LoadBalancer Service is not held in full for the speaker")
	case full.ManagedFields != nil || full.Spec.Selector != nil:
		t.Error("managedFields or selector kept")
	case full.Annotations[v1.LastAppliedConfigAnnotation] != "":
		t.Error("last-applied-configuration kept")
	case full.Annotations["herald.dev/keep"] != "yes":
		t.Errorf("annotations the speaker reads dropped: %v", full.Annotations)
	}
	if c := src.cached("ns", "plain"); c == nil || c.full != nil {
		t.Errorf("a ClusterIP Service is held as %+v, want compact alone", c)
	}
	if c := src.cached("ns", "former"); c == nil || c.full == nil {
		t.Error("a Service with conditions is not held in full: the speaker could not remove them")
	}

	slicesOf := src.EndpointSlices("ns", "web")
	if len(slicesOf) != 1 {
		t.Fatalf("cache holds %d slices of web, want 1", len(slicesOf))
	}
	eps := slicesOf[0].Endpoints
	if len(eps) != 2 || eps[0].Addr != netip.MustParseAddr("192.0.2.101") || eps[0].Node != "node-b" || !eps[0].Ready ||
		eps[0].Hints == nil || !slices.Equal(eps[0].Hints.ForZones, []string{"a"}) || eps[1].Ready {
		t.Errorf("cached endpoints %+v lost what the data plane reads", eps)
	}
	if obj, _, _ := src.slices.GetByKey("ns/web-1"); obj == nil || !obj.(*cachedSlice).triggered.Equal(t0) {
		t.Errorf("cached slice %+v lost its trigger time", obj)
	}
	other := src.EndpointSlices("ns", "other")
	if len(other) != 1 || unsafe.StringData(other[0].Endpoints[0].Node) != unsafe.StringData(eps[0].Node) {
		t.Error("two slices' endpoints on one node hold a copy of its name each")
	}
	web := types.NamespacedName{Namespace: "ns", Name: "web"}
	if nodes := NewSpeakerCache(h.agent.factory).EndpointNodes([]types.NamespacedName{web}); len(nodes) != 1 || !slices.Equal(nodes[web], []string{"node-b"}) {
		t.Errorf("speaker sees ready endpoints on %v, want web's on [node-b] alone", nodes)
	}
	if svcs := NewSpeakerCache(h.agent.factory).Services(); len(svcs) != 2 {
		t.Errorf("speaker sees %d Services, want the LoadBalancer and the one with conditions", len(svcs))
	}
}
