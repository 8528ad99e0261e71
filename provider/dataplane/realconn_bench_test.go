package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// The packet path's cost per new connection: TCP connections opened and
// reset by the node itself, through the herald table, to a ClusterIP whose
// Service has 1 endpoint or PrecreatedPickChains (the services chain's
// first and last pick set lookup, see pickKind), and, for reference,
// straight to an endpoint, which crosses the same chains and matches
// nothing. Only a connection's first packet sees the NAT chains, so this is
// where the rules the pick sets need would show.
func BenchmarkRealNewConnectionDirect(b *testing.B) {
	benchRealNewConnection(b, "198.51.100.100:8080")
}
func BenchmarkRealNewConnection1Endpoint(b *testing.B) { benchRealNewConnection(b, "203.0.113.1:80") }
func BenchmarkRealNewConnection64Endpoints(b *testing.B) {
	benchRealNewConnection(b, "203.0.113.64:80")
}

func benchRealNewConnection(b *testing.B, target string) {
	nft := inNetns(b)
	// Every address is the namespace's own, on lo, so that one listener
	// answers for every endpoint and the route to a ClusterIP exists
	// before DNAT (in output) picks the endpoint.
	ip := func(args ...string) {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			b.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("link", "set", "lo", "up")
	eps := make([]ep, PrecreatedPickChains)
	for i := range eps {
		eps[i] = ep{fmt.Sprintf("198.51.100.%d", 100+i), otherNode, ready}
		ip("addr", "add", eps[i].ip+"/32", "dev", "lo")
	}
	ip("addr", "add", "203.0.113.1/32", "dev", "lo")
	ip("addr", "add", "203.0.113.64/32", "dev", "lo")
	svcs := []*v1.Service{
		service("one", clusterIPs("203.0.113.1"), ports(tcp80)),
		service("all", clusterIPs("203.0.113.64"), ports(tcp80)),
	}
	sl := []*discoveryv1.EndpointSlice{
		endpointSlice("one", "one-a", v4, httpPorts, eps[0]),
		endpointSlice("all", "all-a", v4, httpPorts, eps...),
	}
	if _, err := NewApplier(nft).SyncFull(context.Background(), Build(svcs, sl, testNode, Options{})); err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp4", ":8080")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err == nil {
				_ = c.Close()
			}
		}
	}()
	// The first packet crosses the NAT chains in the dialing thread (the
	// one inNetns locked), whose CPU time, unlike wall time, does not grow
	// while other processes hold the CPUs.
	cpu := cpuTime(unix.RUSAGE_THREAD)
	for b.Loop() {
		c, err := net.Dial("tcp4", target)
		if err != nil {
			b.Fatal(err)
		}
		// A reset leaves no TIME_WAIT behind to run out of ports.
		_ = c.(*net.TCPConn).SetLinger(0)
		_ = c.Close()
	}
	b.ReportMetric(float64((cpuTime(unix.RUSAGE_THREAD)-cpu).Nanoseconds())/1000/float64(b.N), "dial-cpu-us/op")
}
