// Package scale holds herald's big runs on a real kube-apiserver. They are
// slow and load the machine, so they run only when asked, and under
// `go test ./e2e/...` they skip:
//
//   - the scale test: 1,000 fake Nodes kept Ready by kwok and 10,000
//     LoadBalancer Services served by herald-ccm (make scale; -args -scale);
//   - the AWS scale test (make scale-aws);
//   - the data plane side by side: herald-agent and kube-proxy v1.37.2 in
//     nftables mode, each in a network namespace, on 10k IPv6 Services with
//     three endpoints (make bench-kube-proxy; -args -dataplane), and
//     BenchmarkEndpointToKernel, one endpoint's way from the EndpointSlice
//     update to the kernel (go test -bench EndpointToKernel -benchtime 30x).
//
// Nothing imports it.
package scale
