package provider

import (
	"context"
	"encoding/json"
	"fmt"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Every write below happens only when it changes something: a restarted
// CCM re-syncing every Service must not touch any of them.

// condition is the backend's condition as it should be on svc, or nil when
// svc already shows it. The transition time moves only when the status
// does.
func (c *ServiceController) condition(svc *v1.Service, ok bool, reason, message string) *metav1.Condition {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	want := metav1.Condition{Type: c.lb.backend.ConditionType(), Status: status, Reason: reason, Message: message,
		ObservedGeneration: svc.Generation, LastTransitionTime: metav1.NewTime(c.lb.now())}
	existing := meta.FindStatusCondition(svc.Status.Conditions, want.Type)
	if existing == nil {
		return &want
	}
	if existing.Status == want.Status {
		want.LastTransitionTime = existing.LastTransitionTime
	}
	if *existing == want {
		return nil
	}
	return &want
}

// writeStatus writes status.loadBalancer (unless lb is nil) and the
// condition (unless nil) in one patch. A strategic merge patch merges the
// condition by type, leaving other controllers' conditions alone, and
// replaces the ingress list as a whole. No resourceVersion precondition:
// these fields are herald's alone.
func (c *ServiceController) writeStatus(ctx context.Context, svc *v1.Service, lb *v1.LoadBalancerStatus, cond *metav1.Condition) error {
	status := map[string]any{}
	if lb != nil && !apiequality.Semantic.DeepEqual(svc.Status.LoadBalancer, *lb) {
		status["loadBalancer"] = loadBalancerPatch(lb)
	}
	if cond != nil {
		status["conditions"] = []any{cond}
	}
	return c.patchStatus(ctx, svc, status)
}

// clearStatus removes the addresses and herald's condition.
func (c *ServiceController) clearStatus(ctx context.Context, svc *v1.Service) error {
	status := map[string]any{}
	if len(svc.Status.LoadBalancer.Ingress) > 0 {
		status["loadBalancer"] = loadBalancerPatch(&v1.LoadBalancerStatus{})
	}
	if t := c.lb.backend.ConditionType(); meta.FindStatusCondition(svc.Status.Conditions, t) != nil {
		status["conditions"] = []any{map[string]any{"type": t, "$patch": "delete"}}
	}
	return c.patchStatus(ctx, svc, status)
}

func loadBalancerPatch(lb *v1.LoadBalancerStatus) any {
	if len(lb.Ingress) == 0 {
		return map[string]any{"ingress": nil} // a patch deletes only with null
	}
	return lb
}

func (c *ServiceController) patchStatus(ctx context.Context, svc *v1.Service, status map[string]any) error {
	if len(status) == 0 {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"status": status})
	if err != nil {
		return err
	}
	_, err = c.client.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.StrategicMergePatchType, patch,
		metav1.PatchOptions{FieldManager: FieldManager}, "status")
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("writing the Service status: %w", err)
	}
	return nil
}

// writeAnnotations sets the backend's annotations to want: its keys not
// in want are removed.
func (c *ServiceController) writeAnnotations(ctx context.Context, svc *v1.Service, want map[string]string) error {
	changes := map[string]any{}
	for _, key := range c.lb.backend.AnnotationKeys() {
		value, wanted := want[key]
		current, has := svc.Annotations[key]
		switch {
		case wanted && (!has || current != value):
			changes[key] = value
		case !wanted && has:
			changes[key] = nil
		}
	}
	if len(changes) == 0 {
		return nil
	}
	return c.patchMetadata(ctx, svc, map[string]any{"annotations": changes})
}

// patchFinalizers sets the finalizer list and removes the annotations
// drop, with the resourceVersion as a precondition, so a concurrent change
// is retried rather than overwritten.
func (c *ServiceController) patchFinalizers(ctx context.Context, svc *v1.Service, finalizers, drop []string) error {
	metadata := map[string]any{"finalizers": finalizers, "resourceVersion": svc.ResourceVersion}
	removed := map[string]any{}
	for _, key := range drop {
		if _, has := svc.Annotations[key]; has {
			removed[key] = nil
		}
	}
	if len(removed) > 0 {
		metadata["annotations"] = removed
	}
	return c.patchMetadata(ctx, svc, metadata)
}

func (c *ServiceController) patchMetadata(ctx context.Context, svc *v1.Service, metadata map[string]any) error {
	patch, err := json.Marshal(map[string]any{"metadata": metadata})
	if err != nil {
		return err
	}
	_, err = c.client.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.MergePatchType, patch,
		metav1.PatchOptions{FieldManager: FieldManager})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("writing the Service metadata: %w", err)
	}
	return nil
}
