package speaker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/bare-metal/election"
)

// ConditionAnnounced reports on a Service which node announces its
// addresses, and on which interfaces, or why none does.
const ConditionAnnounced = "herald.dev/Announced"

// Reasons of the condition and of the events.
const (
	// ReasonLayer2: announced with ARP/NDP (condition True; event).
	ReasonLayer2 = "Layer2"
	// ReasonAnnounced is the event a new owner records.
	ReasonAnnounced = "Announced"
)

// FieldManager owns the Layer 2 condition the agents write.
const FieldManager = "herald-agent"

// maxListedNodes bounds the per-node reasons a condition message lists.
const maxListedNodes = 8

// desiredCondition is what this node should write for g, if anything: the
// owner reports itself, and when nobody may announce, the reporter says
// why. Everyone else stays quiet, so each change is one write.
func desiredCondition(self string, g *group, announcedOn map[netip.Addr][]string) (*metav1.Condition, bool) {
	switch {
	case g.decision.Announce:
		var parts []string
		for _, a := range g.addrs {
			parts = append(parts, fmt.Sprintf("%s on %s", a, strings.Join(announcedOn[a], ",")))
		}
		return &metav1.Condition{Type: ConditionAnnounced, Status: metav1.ConditionTrue, Reason: ReasonLayer2,
			Message: fmt.Sprintf("Announced by node %s with ARP/NDP: %s", self, strings.Join(parts, "; "))}, true
	case g.decision.Owner == "" && self == g.reporter:
		return &metav1.Condition{Type: ConditionAnnounced, Status: metav1.ConditionFalse, Reason: string(election.ReasonNoCandidate),
			Message: "No node may announce " + joinAddrs(g.addrs) + ": " + candidateSummary(g.candidates)}, true
	}
	return nil, false
}

func candidateSummary(cands []election.Candidate) string {
	if len(cands) == 0 {
		return "the cluster has no nodes"
	}
	sorted := slices.SortedFunc(slices.Values(cands), func(a, b election.Candidate) int { return strings.Compare(a.Node, b.Node) })
	var parts []string
	for i, c := range sorted {
		if i == maxListedNodes {
			parts = append(parts, fmt.Sprintf("and %d more", len(sorted)-i))
			break
		}
		parts = append(parts, c.Node+" "+string(c.Ineligible))
	}
	return strings.Join(parts, ", ")
}

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// conditionWriter applies one condition type on Services with server-side
// apply, through a writeQueue. Each protocol has its own writer and field
// manager: with one manager, applying one condition would remove the other.
type conditionWriter struct {
	client   dynamic.Interface
	services ServiceCache
	condType string
	manager  string
	queue    *writeQueue[types.NamespacedName, *metav1.Condition] // nil value: remove ours
}

func newConditionWriter(client dynamic.Interface, services ServiceCache, condType, manager string) *conditionWriter {
	w := &conditionWriter{client: client, services: services, condType: condType, manager: manager}
	w.queue = newWriteQueue(manager+"-conditions", w.apply)
	return w
}

// set asks for cond on svc (nil: remove this writer's condition) unless
// the Service shows it already.
func (w *conditionWriter) set(svc *v1.Service, cond *metav1.Condition) {
	existing := meta.FindStatusCondition(svc.Status.Conditions, w.condType)
	if cond == nil && existing == nil || cond != nil && existing != nil && sameCondition(*existing, *cond, svc.Generation) {
		return
	}
	w.queue.set(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}, cond, 0)
}

func sameCondition(a, b metav1.Condition, generation int64) bool {
	return a.Status == b.Status && a.Reason == b.Reason && a.Message == b.Message && a.ObservedGeneration == generation
}

func (w *conditionWriter) run(ctx context.Context) { w.queue.run(ctx) }

func (w *conditionWriter) apply(ctx context.Context, key types.NamespacedName, cond *metav1.Condition) error {
	svc := w.services.Service(key.Namespace, key.Name)
	if svc == nil {
		return nil // gone, or no longer one the speaker reads
	}
	body, err := json.Marshal(serviceStatusApply(svc, w.condType, cond))
	if err != nil {
		return err
	}
	_, err = w.client.Resource(servicesResource).Namespace(key.Namespace).Patch(ctx, key.Name, types.ApplyPatchType, body,
		metav1.PatchOptions{FieldManager: w.manager, Force: ptr.To(true)}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

var servicesResource = v1.SchemeGroupVersion.WithResource("services")

// serviceApply is the apply configuration of a Service's status that a
// condition writer owns: its one condition, or none (which removes the
// condition this field manager applied before).
type serviceApply struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Metadata   serviceApplyMeta   `json:"metadata"`
	Status     serviceApplyStatus `json:"status"`
}

type serviceApplyMeta struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

type serviceApplyStatus struct {
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// serviceStatusApply is what a writer of condType applies on svc for cond
// (nil: remove it). The transition time stays while the status does.
func serviceStatusApply(svc *v1.Service, condType string, cond *metav1.Condition) serviceApply {
	a := serviceApply{APIVersion: "v1", Kind: "Service", Metadata: serviceApplyMeta{Name: svc.Name, Namespace: svc.Namespace}}
	if cond != nil {
		transition := metav1.Now()
		if old := meta.FindStatusCondition(svc.Status.Conditions, condType); old != nil && old.Status == cond.Status {
			transition = old.LastTransitionTime
		}
		a.Status.Conditions = []metav1.Condition{{Type: cond.Type, Status: cond.Status, Reason: cond.Reason,
			Message: cond.Message, ObservedGeneration: svc.Generation, LastTransitionTime: transition}}
	}
	return a
}
