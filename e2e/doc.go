// Package e2e holds herald's end-to-end tests: real kube-apiserver and etcd
// (see e2e/cluster), the real herald binaries, and, for the network tier,
// network namespaces. Nothing imports it.
package e2e
