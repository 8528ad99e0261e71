package service

import (
	"fmt"
	"net/netip"
	"strings"

	v1 "k8s.io/api/core/v1"
)

// herald's own annotations. The MetalLB spellings are accepted as aliases so
// users can migrate without editing their Services.
const (
	AnnotationLoadBalancerIPs = "herald.dev/load-balancer-ips"
	AnnotationAddressPool     = "herald.dev/address-pool"
	AnnotationAllowSharedIP   = "herald.dev/allow-shared-ip"

	metalLBLoadBalancerIPs = "metallb.io/loadBalancerIPs"
	metalLBAddressPool     = "metallb.io/address-pool"
	metalLBAllowSharedIP   = "metallb.io/allow-shared-ip"

	// AnnotationSourceRanges is the upstream annotation older clients set
	// instead of spec.loadBalancerSourceRanges.
	AnnotationSourceRanges = "service.beta.kubernetes.io/load-balancer-source-ranges"
)

// aliased returns the value of an annotation that may be spelled two ways.
// Both spellings with different values is an error: silently preferring one
// would hide a migration mistake.
func aliased(annotations map[string]string, primary, alias string) (value, key string, err error) {
	p, hasPrimary := annotations[primary]
	a, hasAlias := annotations[alias]
	switch {
	case hasPrimary && hasAlias && strings.TrimSpace(p) != strings.TrimSpace(a):
		return "", primary, &AnnotationError{Annotation: primary, Value: p,
			Reason: fmt.Sprintf("conflicts with %s=%q; set only one", alias, a)}
	case hasPrimary:
		return strings.TrimSpace(p), primary, nil
	case hasAlias:
		return strings.TrimSpace(a), alias, nil
	}
	return "", "", nil
}

// parseRequestedIPs reads the specific addresses a Service asks for: the
// annotation (one address per family) or the deprecated spec.loadBalancerIP.
func parseRequestedIPs(svc *v1.Service) ([]netip.Addr, error) {
	value, key, err := aliased(svc.Annotations, AnnotationLoadBalancerIPs, metalLBLoadBalancerIPs)
	if err != nil {
		return nil, err
	}
	legacy := strings.TrimSpace(svc.Spec.LoadBalancerIP)
	if key == "" {
		if legacy == "" {
			return nil, nil
		}
		ip, err := netip.ParseAddr(legacy)
		if err != nil || ip.Zone() != "" {
			return nil, &SpecError{Field: "loadBalancerIP", Value: legacy, Reason: "not an IP address"}
		}
		return []netip.Addr{ip.Unmap()}, nil
	}
	if legacy != "" {
		return nil, &AnnotationError{Annotation: key, Value: value,
			Reason: "spec.loadBalancerIP is set too; use one of them"}
	}
	return parseIPList(key, value)
}

func parseIPList(key, value string) ([]netip.Addr, error) {
	if value == "" {
		return nil, &AnnotationError{Annotation: key, Value: value, Reason: "empty; list one address per IP family"}
	}
	var ips []netip.Addr
	seenFamily := map[bool]bool{}
	for _, field := range strings.Split(value, ",") {
		field = strings.TrimSpace(field)
		ip, err := netip.ParseAddr(field)
		if err != nil || ip.Zone() != "" {
			return nil, &AnnotationError{Annotation: key, Value: value, Reason: fmt.Sprintf("%q is not an IP address", field)}
		}
		ip = ip.Unmap()
		if seenFamily[ip.Is4()] {
			return nil, &AnnotationError{Annotation: key, Value: value, Reason: "more than one address of the same IP family"}
		}
		seenFamily[ip.Is4()] = true
		ips = append(ips, ip)
	}
	return ips, nil
}

// parseSourceRanges prefers the spec field, as the upstream service helpers
// do, and falls back to the legacy annotation.
func parseSourceRanges(svc *v1.Service) ([]netip.Prefix, error) {
	if len(svc.Spec.LoadBalancerSourceRanges) > 0 {
		var out []netip.Prefix
		for _, s := range svc.Spec.LoadBalancerSourceRanges {
			p, err := parsePrefix(s)
			if err != nil {
				return nil, &SpecError{Field: "loadBalancerSourceRanges", Value: s, Reason: err.Error()}
			}
			out = append(out, p)
		}
		return out, nil
	}
	value, ok := svc.Annotations[AnnotationSourceRanges]
	if !ok || strings.TrimSpace(value) == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for _, s := range strings.Split(value, ",") {
		p, err := parsePrefix(s)
		if err != nil {
			return nil, &AnnotationError{Annotation: AnnotationSourceRanges, Value: value, Reason: err.Error()}
		}
		out = append(out, p)
	}
	return out, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", strings.TrimSpace(s))
	}
	return p.Masked(), nil
}
