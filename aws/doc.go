// Package aws will be herald's AWS backend: a Network Load Balancer per
// Service, targeting the nodes' NodePorts. It is not implemented yet, and
// herald-ccm rejects `backend: aws` at start with that reason rather than
// pretend to provide load balancers.
package aws
