// Package aws is herald's AWS backend: a Network Load Balancer per
// Service, whose target groups target the nodes' NodePorts.
//
// The work is split as the design card says: aws/build (pure) turns a
// Service into the desired stack, aws/deploy makes AWS match it, and
// aws/api is the only package that talks to the AWS SDK. This package
// wires them to provider.Backend, runs the periodic garbage collection and
// offers InstancesV2 for the cloud node controllers.
package aws
