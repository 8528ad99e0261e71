package dataplane

import (
	"net/netip"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// HealthCheck is what a Service's healthCheckNodePort server on this node
// answers: with externalTrafficPolicy Local, a cloud load balancer sends
// traffic only to nodes whose server reports local endpoints.
type HealthCheck struct {
	// Port is spec.healthCheckNodePort.
	Port int32
	// LocalEndpoints counts the distinct addresses of ready endpoints on this
	// node, over all ports and families, as kube-proxy does: a pod serving
	// two ports is one endpoint.
	LocalEndpoints int
}

// HealthChecks lists the Services that need a healthCheckNodePort server on
// node and what each must answer. It uses the same endpoint selection as
// Build, so the count matches what the dataplane forwards to. Serving but
// terminating endpoints are not counted even though Build still uses them as
// a fallback: reporting them would keep a draining node in the load balancer.
func HealthChecks(services []*v1.Service, endpointSlices []*discoveryv1.EndpointSlice, node string) map[types.NamespacedName]HealthCheck {
	out := map[types.NamespacedName]HealthCheck{}
	var bySvc map[string][]*EndpointSlice
	for _, svc := range servicesFrom(services) {
		if !needsHealthCheck(svc) {
			continue
		}
		if bySvc == nil {
			bySvc = slicesByService(slicesFrom(endpointSlices))
		}
		out[types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}] =
			healthCheck(svc, bySvc[svc.Namespace+"/"+svc.Name], node)
	}
	return out
}

func needsHealthCheck(svc *Service) bool {
	return svc.HealthCheckNodePort != 0 && svc.ExternalLocal
}

// healthCheck is one Service's HealthCheck from its EndpointSlices.
func healthCheck(svc *Service, sl []*EndpointSlice, node string) HealthCheck {
	local := map[netip.Addr]bool{}
	for _, sp := range svc.Ports {
		for _, v6 := range []bool{false, true} {
			for _, e := range portEndpoints(sl, sp, v6, Node{Name: node}) {
				if e.local && e.ready {
					local[e.addr] = true
				}
			}
		}
	}
	return HealthCheck{Port: svc.HealthCheckNodePort, LocalEndpoints: len(local)}
}
