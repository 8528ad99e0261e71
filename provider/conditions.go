package provider

import (
	"context"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/klog/v2"
)

// setCondition records herald's outcome on the Service with server-side
// apply, so herald owns only its own condition and never races the service
// controller's writes to status.loadBalancer. It writes only on change:
// a restarted CCM re-ensuring every Service must not touch any of them.
func (p *Provider) setCondition(ctx context.Context, svc *v1.Service, status v1.ConditionStatus, reason, message string) {
	conditionType := p.backend.ConditionType()
	existing := meta.FindStatusCondition(svc.Status.Conditions, conditionType)
	if existing != nil && existing.Status == metav1.ConditionStatus(status) && existing.Reason == reason &&
		existing.Message == message && existing.ObservedGeneration == svc.Generation {
		return
	}
	transition := metav1.NewTime(p.now())
	if existing != nil && existing.Status == metav1.ConditionStatus(status) {
		transition = existing.LastTransitionTime
	}
	condition := metav1ac.Condition().
		WithType(conditionType).
		WithStatus(metav1.ConditionStatus(status)).
		WithReason(reason).
		WithMessage(message).
		WithObservedGeneration(svc.Generation).
		WithLastTransitionTime(transition)
	p.applyStatus(ctx, svc, corev1ac.ServiceStatus().WithConditions(condition))
}

// clearCondition drops herald's condition by applying a status that no
// longer contains it.
func (p *Provider) clearCondition(ctx context.Context, svc *v1.Service) {
	if meta.FindStatusCondition(svc.Status.Conditions, p.backend.ConditionType()) == nil {
		return
	}
	p.applyStatus(ctx, svc, corev1ac.ServiceStatus())
}

func (p *Provider) applyStatus(ctx context.Context, svc *v1.Service, status *corev1ac.ServiceStatusApplyConfiguration) {
	apply := corev1ac.Service(svc.Name, svc.Namespace).WithStatus(status)
	_, err := p.client.CoreV1().Services(svc.Namespace).ApplyStatus(ctx, apply,
		metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	if err != nil && !apierrors.IsNotFound(err) {
		// The condition is a report, not state: failing the sync over it
		// would delay the load balancer itself.
		klog.FromContext(ctx).Error(err, "Updating the Service condition failed")
	}
}
