package service

import (
	"errors"
	"testing"

	v1 "k8s.io/api/core/v1"
)

// FuzzBuild feeds arbitrary annotation values and spec strings to Build:
// it must never panic, and every failure must be one of the typed errors
// the provider turns into an event naming the field.
func FuzzBuild(f *testing.F) {
	f.Add("192.0.2.1", "", "pool", "key", "192.0.2.0/24", "")
	f.Add("192.0.2.1,2001:db8::1", "", "", "", "", "")
	f.Add("", "192.0.2.300", "", "", "", "198.51.100.0/24")
	f.Add(",,", "::ffff:192.0.2.1", "a", "b", "x/y", "2001:db8::/129")
	f.Fuzz(func(t *testing.T, ips, legacyIP, pool, sharingKey, annotationRanges, specRange string) {
		svc := lbService(func(s *v1.Service) {
			s.Spec.IPFamilies = []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}
			s.Spec.LoadBalancerIP = legacyIP
			s.Annotations = map[string]string{
				AnnotationLoadBalancerIPs: ips,
				metalLBAddressPool:        pool,
				AnnotationAllowSharedIP:   sharingKey,
				AnnotationSourceRanges:    annotationRanges,
			}
			if specRange != "" {
				s.Spec.LoadBalancerSourceRanges = []string{specRange}
			}
		})
		lb, err := Build(svc, nil)
		if err != nil {
			if !errors.Is(err, ErrInvalidAnnotation) && !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if len(lb.RequestedIPs) > 2 {
			t.Fatalf("more than one address per family: %v", lb.RequestedIPs)
		}
		for _, p := range lb.SourceRanges {
			if p != p.Masked() {
				t.Fatalf("source range %v not masked", p)
			}
		}
	})
}
