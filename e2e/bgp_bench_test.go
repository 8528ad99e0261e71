package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/heraldlb/herald/e2e/labkit"
	"github.com/heraldlb/herald/e2e/routers"
	"github.com/heraldlb/herald/provider/service"
)

// The BGP benchmarks run on the real lab (three nodes, FRR or BIRD) and
// time what the router's kernel table does, polled every routePoll. Each
// iteration of the inner "trials" benchmark is one trial, so -benchtime
// sets their number; the lab is built once, by the outer benchmark.
//
//	go test ./e2e -run '^$' -bench 'BGP' -benchtime 10x
const routePoll = 5 * time.Millisecond

// BenchmarkBGPNodeFailureBFD measures how long FRR keeps routing a VIP over
// a node that failed at its bridge port, with BFD at 100 ms intervals
// (detection 300 ms) and a 90 s hold time. Goal: median < 0.5 s.
func BenchmarkBGPNodeFailureBFD(b *testing.B) {
	benchNodeFailure(b, bfdOptions("90s"), true)
}

// BenchmarkBGPNodeFailureHoldTime is the same without BFD: the shortest
// hold time BGP allows (3 s, keepalives every 1 s) bounds detection.
func BenchmarkBGPNodeFailureHoldTime(b *testing.B) {
	benchNodeFailure(b, labkit.BGPOptions{Peer: map[string]any{"holdTime": "3s", "keepaliveTime": "1s"}}, false)
}

func benchNodeFailure(b *testing.B, opts labkit.BGPOptions, bfd bool) {
	e := newBGPEnv(b, routers.FRR, opts)
	f := e.frr()
	vip := vipOf(b, e.CreateService("default", "web", v1.IPv4Protocol), false)
	b.Run("trials", func(b *testing.B) {
		e := &bgpEnv{BGP: e.BGP, t: b}
		var took []time.Duration
		for i := range b.N {
			b.StopTimer()
			if bfd {
				e.waitBFDUp(f)
			} else if err := e.WaitEstablished(routeWithin); err != nil {
				b.Fatal(err)
			}
			e.waitNextHops(vip, allNodes()...)
			node := allNodes()[i%len(allNodes())]
			others := slices.DeleteFunc(allNodes(), func(n string) bool { return n == node })
			b.StartTimer()

			failed := time.Now()
			if err := e.Net.SetPortUp(&e.Nodes[node].Host, false); err != nil {
				b.Fatal(err)
			}
			at, err := e.WaitNextHops(vip, labkit.NodeAddrs(false, others...), routePoll, routeWithin)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			took = append(took, at.Sub(failed))
			b.Logf("trial %d: %s failed; FRR routes around it after %v", i, node, at.Sub(failed).Round(time.Millisecond))
			if err := e.Net.SetPortUp(&e.Nodes[node].Host, true); err != nil {
				b.Fatal(err)
			}
		}
		report(b, "withdraw", took)
	})
}

// BenchmarkBGPServiceCreation measures, on each router, the time from
// creating a LoadBalancer Service (its EndpointSlice written right after,
// as the endpoint controller would) to the router's kernel routing its VIP
// over every node, and from deleting it to the route's withdrawal.
// Goal: median < 300 ms to the route.
func BenchmarkBGPServiceCreation(b *testing.B) {
	for _, kind := range []routers.Kind{routers.BIRD, routers.FRR} {
		b.Run(string(kind), func(b *testing.B) {
			e := newBGPEnv(b, kind, labkit.BGPOptions{})
			if err := e.WaitEstablished(routeWithin); err != nil {
				b.Fatal(err)
			}
			trial := 0
			b.Run("trials", func(b *testing.B) {
				e := &bgpEnv{BGP: e.BGP, t: b}
				var routed, withdrawn []time.Duration
				for range b.N {
					r, w := e.createDeleteTrial(trial)
					routed, withdrawn = append(routed, r), append(withdrawn, w)
					trial++
				}
				report(b, "route", routed)
				report(b, "withdraw", withdrawn)
			})
		})
	}
}

// createDeleteTrial creates Service web-<trial> with an address chosen
// beforehand (so the router's table can be watched from the start), waits
// for its route, deletes it and waits for the withdrawal, and returns both
// times.
func (e *bgpEnv) createDeleteTrial(trial int) (routed, withdrawn time.Duration) {
	e.t.Helper()
	name := fmt.Sprintf("web-%d", trial)
	// Ten addresses, reused once the Service that had one is gone.
	vip := netip.MustParseAddr("198.51.100.200")
	for range trial % 10 {
		vip = vip.Next()
	}
	type seen struct {
		at  time.Time
		err error
	}
	route := make(chan seen, 1)
	go func() {
		at, err := e.WaitNextHops(vip, labkit.NodeAddrs(false, allNodes()...), routePoll, routeWithin)
		route <- seen{at, err}
	}()
	created := time.Now()
	e.CreateServiceWith("default", name, labkit.ServiceOptions{Families: []v1.IPFamily{v1.IPv4Protocol},
		Annotations: map[string]string{service.AnnotationLoadBalancerIPs: vip.String()}})
	r := <-route
	if r.err != nil {
		e.t.Fatal(r.err)
	}

	deleted := time.Now()
	e.deleteService(name)
	gone, err := e.WaitNextHops(vip, nil, routePoll, routeWithin)
	if err != nil {
		e.t.Fatal(err)
	}
	waitForServiceAbsent(e.t, e.Kube, "default", name)
	return r.at.Sub(created), gone.Sub(deleted)
}
