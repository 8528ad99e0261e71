// Package service turns a Kubernetes Service and the cluster's Nodes into the
// backend-neutral description of the load balancer herald must provide.
//
// It is pure: no I/O, no clocks. Every annotation is parsed and validated
// here, once, so the backends never see raw strings and every malformed value
// surfaces as a typed error that the provider can turn into an event naming
// the annotation.
package service
