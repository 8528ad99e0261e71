package agent

import (
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// TestCachedObjectsAreSlim: the informer caches keep what the data plane
// and the speaker read (annotations such as the trigger time and herald's
// own, endpoint addresses, conditions, node names) and drop the rest.
func TestCachedObjectsAreSlim(t *testing.T) {
	managed := []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply,
		FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(`{"f:spec":{}}`)}}
	svc := webService()
	svc.ManagedFields = managed
	svc.Spec.Selector = map[string]string{"app": "web"}
	svc.Annotations = map[string]string{v1.LastAppliedConfigAnnotation: `{"kind":"Service"}`, "herald.dev/keep": "yes"}
	sl := webSlice("192.0.2.101", "node-b")
	sl.ManagedFields = managed
	sl.Annotations = map[string]string{v1.EndpointsLastChangeTriggerTime: t0.Format(time.RFC3339Nano)}
	sl.Endpoints[0].TargetRef = &v1.ObjectReference{Kind: "Pod", Namespace: "ns", Name: "web-0"}
	sl.Endpoints[0].DeprecatedTopology = map[string]string{"zone": "a"}
	sl.Endpoints[0].Hostname, sl.Endpoints[0].Zone = ptr.To("web-0"), ptr.To("a")
	sl.Endpoints[0].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "a"}}}
	sl.UID = "4f6a1c1e-0000-4000-8000-000000000001"
	sl.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: "web", UID: "4f6a1c1e-0000-4000-8000-000000000002"}}

	h := newHarness(t, testNode(), svc, sl)
	h.startInformers(t)
	gotSvc := h.agent.source.Service("ns", "web")
	gotSlices := h.agent.source.EndpointSlices("ns", "web")
	if gotSvc == nil || len(gotSlices) != 1 {
		t.Fatalf("cache holds Service %v and %d slices, want both", gotSvc, len(gotSlices))
	}
	gotSlice := gotSlices[0]
	if gotSvc.ManagedFields != nil || gotSlice.ManagedFields != nil {
		t.Error("managedFields kept")
	}
	if gotSvc.Spec.Selector != nil {
		t.Error("selector kept")
	}
	if _, ok := gotSvc.Annotations[v1.LastAppliedConfigAnnotation]; ok {
		t.Error("last-applied-configuration kept")
	}
	if gotSvc.Annotations["herald.dev/keep"] != "yes" || gotSlice.Annotations[v1.EndpointsLastChangeTriggerTime] == "" {
		t.Errorf("annotations the agent reads dropped: %v, %v", gotSvc.Annotations, gotSlice.Annotations)
	}
	ep := gotSlice.Endpoints[0]
	if ep.TargetRef != nil || ep.DeprecatedTopology != nil || ep.Hostname != nil || ep.Zone != nil {
		t.Errorf("endpoint keeps targetRef %v, deprecatedTopology %v, hostname %v or zone %v", ep.TargetRef, ep.DeprecatedTopology, ep.Hostname, ep.Zone)
	}
	if gotSlice.UID != "" || gotSlice.OwnerReferences != nil {
		t.Errorf("slice keeps UID %q or owner references %v", gotSlice.UID, gotSlice.OwnerReferences)
	}
	if ep.Hints == nil || len(ep.Hints.ForZones) != 1 || gotSlice.Labels[discoveryv1.LabelServiceName] != "web" {
		t.Errorf("slice lost the topology hints %v or the service-name label %v the data plane reads", ep.Hints, gotSlice.Labels)
	}
	if len(ep.Addresses) != 1 || ep.Addresses[0] != "192.0.2.101" || ep.NodeName == nil || *ep.NodeName != "node-b" || ep.Conditions.Ready == nil {
		t.Errorf("endpoint %+v lost what the data plane reads", ep)
	}
}
