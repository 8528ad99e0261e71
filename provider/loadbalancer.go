package provider

import (
	"context"
	"errors"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/provider/service"
)

// Event and condition reasons the provider itself produces.
const (
	ReasonInvalidAnnotation = "InvalidAnnotation"
	ReasonInvalidSpec       = "InvalidServiceSpec"
	ReasonEnsured           = "Ensured"
	ReasonFailed            = "SyncFailed"
)

// GetLoadBalancer reports whether the backend holds a load balancer for svc.
func (p *Provider) GetLoadBalancer(ctx context.Context, _ string, svc *v1.Service) (*v1.LoadBalancerStatus, bool, error) {
	if err := p.ready(); err != nil {
		return nil, false, err
	}
	ctx = withService(ctx, svc)
	return p.backend.Get(ctx, service.RefOf(svc))
}

// GetLoadBalancerName returns the stable name of svc's load balancer.
func (p *Provider) GetLoadBalancerName(_ context.Context, _ string, svc *v1.Service) string {
	return service.Name(svc)
}

// EnsureLoadBalancer validates svc and has the backend provide its load
// balancer. Invalid input is reported on the Service as a Warning event and
// a False condition; nothing else is touched, so other Services keep theirs.
func (p *Provider) EnsureLoadBalancer(ctx context.Context, _ string, svc *v1.Service, nodes []*v1.Node) (*v1.LoadBalancerStatus, error) {
	if err := p.ready(); err != nil {
		return nil, err
	}
	ctx = withService(ctx, svc)
	lb, err := service.Build(svc, nodes)
	if err != nil {
		p.reportFailure(ctx, svc, err)
		return nil, err
	}
	status, err := p.backend.Ensure(ctx, lb)
	if err != nil {
		p.reportFailure(ctx, svc, err)
		return nil, err
	}
	p.setCondition(ctx, svc, v1.ConditionTrue, ReasonEnsured, "load balancer ready at "+ingressString(status))
	return status, nil
}

// UpdateLoadBalancer follows node changes.
func (p *Provider) UpdateLoadBalancer(ctx context.Context, _ string, svc *v1.Service, nodes []*v1.Node) error {
	if err := p.ready(); err != nil {
		return err
	}
	ctx = withService(ctx, svc)
	lb, err := service.Build(svc, nodes)
	if err != nil {
		p.reportFailure(ctx, svc, err)
		return err
	}
	if err := p.backend.UpdateNodes(ctx, lb); err != nil {
		p.reportFailure(ctx, svc, err)
		return err
	}
	return nil
}

// EnsureLoadBalancerDeleted releases svc's load balancer and takes back the
// condition herald set, so a Service that stops being a LoadBalancer carries
// nothing stale.
func (p *Provider) EnsureLoadBalancerDeleted(ctx context.Context, _ string, svc *v1.Service) error {
	if err := p.ready(); err != nil {
		return err
	}
	ctx = withService(ctx, svc)
	if err := p.backend.Delete(ctx, service.RefOf(svc)); err != nil {
		return err
	}
	p.clearCondition(ctx, svc)
	return nil
}

func withService(ctx context.Context, svc *v1.Service) context.Context {
	return klog.NewContext(ctx, klog.FromContext(ctx).WithValues("service", klog.KObj(svc)))
}

// reportFailure turns err into a Warning event and a False condition.
// Errors without a user-facing reason get only the condition: the service
// controller already records its own SyncLoadBalancerFailed event for them.
func (p *Provider) reportFailure(ctx context.Context, svc *v1.Service, err error) {
	if errors.Is(err, ErrNotReady) {
		klog.FromContext(ctx).V(2).Info("Load balancer sync deferred", "err", err)
		return
	}
	reason := reasonOf(err)
	klog.FromContext(ctx).Info("Load balancer not provided", "reason", reason, "err", err)
	if reason != ReasonFailed {
		p.recorder.Event(svc, v1.EventTypeWarning, reason, err.Error())
	}
	p.setCondition(ctx, svc, v1.ConditionFalse, reason, err.Error())
}

func reasonOf(err error) string {
	var reasoned ReasonedError
	switch {
	case errors.Is(err, service.ErrInvalidAnnotation):
		return ReasonInvalidAnnotation
	case errors.Is(err, service.ErrInvalidSpec):
		return ReasonInvalidSpec
	case errors.As(err, &reasoned):
		return reasoned.Reason()
	}
	return ReasonFailed
}

func ingressString(status *v1.LoadBalancerStatus) string {
	var parts []string
	for _, in := range status.Ingress {
		if in.IP != "" {
			parts = append(parts, in.IP)
		}
		if in.Hostname != "" {
			parts = append(parts, in.Hostname)
		}
	}
	return strings.Join(parts, ", ")
}
