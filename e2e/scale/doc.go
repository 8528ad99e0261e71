// Package scale holds herald's scale test: a real kube-apiserver with 1,000
// fake Nodes kept Ready by kwok and 10,000 LoadBalancer Services served by
// herald-ccm. It is slow and loads the machine, so it runs only when asked:
//
//	make scale
//	go test ./e2e/scale -run Scale -timeout 30m -args -scale
//
// Under `go test ./e2e/...` it skips. Nothing imports it.
package scale
