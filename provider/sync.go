package provider

import (
	"context"
	"errors"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/heraldlb/herald/provider/service"
)

// Event and condition reasons the provider itself produces.
const (
	ReasonInvalidAnnotation = "InvalidAnnotation"
	ReasonInvalidSpec       = "InvalidServiceSpec"
	ReasonEnsured           = "Ensured"
	ReasonFailed            = "SyncFailed"
)

// ensure validates svc and has the backend provide its load balancer.
// Invalid input is an error of service's typed errors: it concerns this
// Service alone.
func (p *Provider) ensure(ctx context.Context, svc *v1.Service, nodes []*v1.Node) (*Result, error) {
	if err := p.ready(); err != nil {
		return nil, err
	}
	lb, err := service.Build(svc, nodes)
	if err != nil {
		return nil, err
	}
	return p.backend.Ensure(ctx, lb)
}

// updateNodes moves svc's load balancer to nodes.
func (p *Provider) updateNodes(ctx context.Context, svc *v1.Service, nodes []*v1.Node) error {
	if err := p.ready(); err != nil {
		return err
	}
	lb, err := service.Build(svc, nodes)
	if err != nil {
		return err // its next sync reports it
	}
	return p.backend.UpdateNodes(ctx, lb)
}

// remove releases svc's load balancer. It works on a Service whose
// annotations no longer parse, so a broken Service can still go.
func (p *Provider) remove(ctx context.Context, svc *v1.Service) error {
	if err := p.ready(); err != nil {
		return err
	}
	return p.backend.Delete(ctx, service.RefOf(svc))
}

// reasonOf is the event and condition reason of a failed sync.
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

// userError reports whether err is the user's to fix (an annotation, a
// spec field, an exhausted pool): logged at info level, not as an error.
func userError(err error) bool { return reasonOf(err) != ReasonFailed }

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
