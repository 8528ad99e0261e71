package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/e2e/labkit"
	"github.com/heraldlb/herald/e2e/netlab"
)

// TestNetnsEndpointSemantics proves with traffic what kube-proxy does with
// endpoints and that the packet tracer alone showed for herald before:
// internalTrafficPolicy Local, externalIPs, terminating endpoints used when
// no ready one remains, a named targetPort that resolves to a different
// port on each endpoint, and topology hints (trafficDistribution).
func TestNetnsEndpointSemantics(t *testing.T) {
	e := newNetEnv(t)
	n1, n2, cl := e.nodes["n1"].Netns, e.nodes["n2"].Netns, e.client4()
	from := func(ns *netlab.Netns, addr string) func() (answer, error) {
		return func() (answer, error) { return get(ns, addr) }
	}
	only := func(pods ...string) func(answer) error {
		return func(a answer) error {
			for _, p := range pods {
				if a.Pod == p {
					return nil
				}
			}
			return fmt.Errorf("answer from %s, want one of %v", a.Pod, pods)
		}
	}

	t.Run("internalTrafficPolicy Local stays on the node", func(t *testing.T) {
		svc := echoService("itp-local", v1.ServiceTypeClusterIP)
		svc.Spec.InternalTrafficPolicy = ptr.To(v1.ServiceInternalTrafficPolicyLocal)
		itp := e.createService(t, svc)
		e.setEndpoints(t, "itp-local", "a1", "a2", "b1")
		addr := hostPort(itp.Spec.ClusterIP, 80)
		for ns, pods := range map[*netlab.Netns][]string{n1: {"a1", "a2"}, n2: {"b1"}} {
			eventually(t, "ClusterIP from "+ns.Name, from(ns, addr), anyAnswer)
			seen := podsOf(t, 20, from(ns, addr), only(pods...))
			if len(seen) != len(pods) {
				t.Errorf("20 connections from %s reached %v, want each of %v", ns.Name, seen, pods)
			}
		}
	})

	t.Run("externalIPs forward from outside, masqueraded", func(t *testing.T) {
		svc := echoService("ext-ip", v1.ServiceTypeClusterIP)
		svc.Spec.ExternalIPs = []string{vip.String()} // the client routes it via n1
		e.createService(t, svc)
		e.setEndpoints(t, "ext-ip", "a1", "b1")
		addr := hostPort(vip.String(), 80)
		eventually(t, "external IP from the client", from(cl, addr), anyAnswer)
		seen := podsOf(t, 20, from(cl, addr), func(a answer) error {
			if err := only("a1", "b1")(a); err != nil {
				return err
			}
			// externalTrafficPolicy Cluster: b1 is on n2 and must answer
			// through n1, so n1 hides the client behind its own address.
			if a.From.Addr() == clientIP {
				return fmt.Errorf("%s saw the client address %v under externalTrafficPolicy Cluster", a.Pod, a.From)
			}
			return nil
		})
		if len(seen) != 2 {
			t.Errorf("20 connections to the external IP reached %v, want a1 and b1", seen)
		}
	})

	t.Run("terminating endpoints serve only when no ready one remains", func(t *testing.T) {
		drain := e.createService(t, echoService("drain", v1.ServiceTypeClusterIP))
		addr := hostPort(drain.Spec.ClusterIP, 80)
		// a1 is draining but still serving; b1 is draining and no longer
		// serving: only a1 may answer.
		e.writeSlice(t, "drain", "drain-1", echoPort, sliceEndpoint{"a1", terminating(true), ""}, sliceEndpoint{"b1", terminating(false), ""})
		eventually(t, "the serving terminating endpoint", from(n1, addr), func(a answer) bool { return a.Pod == "a1" })
		podsOf(t, 10, from(n1, addr), only("a1"))
		// A ready endpoint appears: the draining one gets no new connection.
		e.writeSlice(t, "drain", "drain-1", echoPort, sliceEndpoint{"a1", terminating(true), ""}, sliceEndpoint{"a2", readyConditions, ""})
		eventually(t, "the ready endpoint", from(n1, addr), func(a answer) bool { return a.Pod == "a2" })
		podsOf(t, 10, from(n1, addr), only("a2"))
	})

	t.Run("named targetPort resolves per endpoint", func(t *testing.T) {
		// b1 runs a second echo server on another port, named b1-alt.
		const altPort = echoPort + 1
		p, err := e.pods["b1"].Start("echo-b1-alt", filepath.Join(e.dir, "echo-b1-alt.log"),
			labBinaries(t).Echo, "--name=b1-alt", "--listen=:"+strconv.Itoa(altPort))
		if err != nil {
			t.Fatal(err)
		}
		e.lab.OnCleanup(func() { p.Stop(5 * time.Second) })
		svc := echoService("named", v1.ServiceTypeClusterIP)
		svc.Spec.Ports = svc.Spec.Ports[:1]
		svc.Spec.Ports[0].TargetPort = intstr.FromString("web")
		named := e.createService(t, svc)
		// Two slices, as the EndpointSlice controller writes them when the
		// pods' container ports named "web" differ.
		e.writeSlice(t, "named", "named-1", echoPort, sliceEndpoint{"a1", readyConditions, ""})
		e.writeSlice(t, "named", "named-2", altPort, sliceEndpoint{"b1", readyConditions, ""})
		addr := hostPort(named.Spec.ClusterIP, 80)
		// The slices arrive one by one: wait for the second.
		eventually(t, "the named port on b1", from(n1, addr), func(a answer) bool { return a.Pod == "b1-alt" })
		seen := podsOf(t, 20, from(n1, addr), only("a1", "b1-alt"))
		if len(seen) != 2 {
			t.Errorf("20 connections reached %v, want a1 on %d and b1-alt on %d", seen, echoPort, altPort)
		}
	})

	t.Run("an unallocated ClusterIP is refused at once", func(t *testing.T) {
		free := e.unallocatedClusterIP(t)
		web := e.createService(t, echoService("allocated", v1.ServiceTypeClusterIP))
		e.setEndpoints(t, "allocated", "a1")
		for what, target := range map[string]struct {
			ns   *netlab.Netns
			addr string
		}{
			"unallocated ClusterIP from n1":       {n1, hostPort(free.String(), 80)},
			"unallocated ClusterIP from pod a1":   {e.pods["a1"].Netns, hostPort(free.String(), 80)},
			"a port the ClusterIP lacks, from n1": {n1, hostPort(web.Spec.ClusterIP, 81)},
		} {
			refusedAtOnce(t, what, target.ns, target.addr)
		}
	})

	t.Run("topology hints keep traffic in the zone", func(t *testing.T) {
		// Restarted agents read their Node's zone before their first sync:
		// no test traffic can race the label.
		for node, zone := range map[string]string{"n1": "zone-a", "n2": "zone-b"} {
			e.labelZone(t, node, zone)
			e.restartAgent(t, node)
		}
		zonal := e.createService(t, echoService("zonal", v1.ServiceTypeClusterIP))
		addr := hostPort(zonal.Spec.ClusterIP, 80)
		// As the EndpointSlice controller writes them for
		// trafficDistribution PreferSameZone.
		e.writeSlice(t, "zonal", "zonal-1", echoPort, sliceEndpoint{"a1", readyConditions, "zone-a"},
			sliceEndpoint{"a2", readyConditions, "zone-a"}, sliceEndpoint{"b1", readyConditions, "zone-b"})
		for ns, pods := range map[*netlab.Netns][]string{n1: {"a1", "a2"}, n2: {"b1"}} {
			eventually(t, "ClusterIP from "+ns.Name, from(ns, addr), anyAnswer)
			seen := podsOf(t, 20, from(ns, addr), only(pods...))
			if len(seen) != len(pods) {
				t.Errorf("20 connections from %s reached %v, want each of %v", ns.Name, seen, pods)
			}
		}
		// No endpoint hinted for n2's zone: n2 uses them all, as kube-proxy.
		e.writeSlice(t, "zonal", "zonal-1", echoPort, sliceEndpoint{"a1", readyConditions, "zone-a"},
			sliceEndpoint{"b1", readyConditions, "zone-a"})
		eventually(t, "n2 falling back to every endpoint", from(n2, addr), func(a answer) bool { return a.Pod == "a1" })
	})
}

// labelZone sets a Node's topology.kubernetes.io/zone label.
func (e *netEnv) labelZone(t testing.TB, node, zone string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, v1.LabelTopologyZone, zone)
	if _, err := e.client.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// sliceEndpoint is one pod in a slice written by writeSlice, with its
// conditions and, when set, the zone hint the EndpointSlice controller
// gives it.
type sliceEndpoint struct {
	pod        string
	conditions discoveryv1.EndpointConditions
	zoneHint   string
}

var readyConditions = discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)}

// terminating are the conditions of a pod being deleted: never ready,
// serving while its readiness probe still passes.
func terminating(serving bool) discoveryv1.EndpointConditions {
	return discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(serving), Terminating: ptr.To(true)}
}

// writeSlice creates or replaces one IPv4 EndpointSlice of a Service, for
// its TCP port "http", with the port its pods listen on and each pod's
// conditions, as the EndpointSlice controller writes them.
func (e *netEnv) writeSlice(t testing.TB, svc, name string, port int, eps ...sliceEndpoint) {
	t.Helper()
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "herald-e2e"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To(int32(port))}},
	}
	for _, ep := range eps {
		endpoint := discoveryv1.Endpoint{
			Addresses: []string{e.pods[ep.pod].IP.String()}, Conditions: ep.conditions, NodeName: ptr.To(e.podNode[ep.pod]),
		}
		if ep.zoneHint != "" {
			endpoint.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: ep.zoneHint}}}
		}
		slice.Endpoints = append(slice.Endpoints, endpoint)
	}
	labkit.WriteSlice(t, e.client, slice)
}

// unallocatedClusterIP is an IPv4 address inside the cluster's ServiceCIDR
// that no Service holds.
func (e *netEnv) unallocatedClusterIP(t testing.TB) netip.Addr {
	t.Helper()
	ctx := context.Background()
	cidrs, err := e.client.NetworkingV1().ServiceCIDRs().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svcs, err := e.client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	taken := map[string]bool{}
	for _, s := range svcs.Items {
		for _, ip := range s.Spec.ClusterIPs {
			taken[ip] = true
		}
	}
	for _, c := range cidrs.Items {
		for _, raw := range c.Spec.CIDRs {
			p := netip.MustParsePrefix(raw)
			// From the top of the range down: the allocator starts low.
			for a, n := lastAddr(p).Prev(), 0; p.Contains(a) && n < 64; a, n = a.Prev(), n+1 {
				if a.Is4() && !taken[a.String()] {
					return a
				}
			}
		}
	}
	t.Fatalf("no free IPv4 ClusterIP in the ServiceCIDRs %+v", cidrs.Items)
	return netip.Addr{}
}

// lastAddr is the highest address of p (its broadcast address for IPv4).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// refusedAtOnce waits until a connection to addr from ns is refused, then
// checks that a fresh one is refused within refusedWithin: a reset from
// the node, not a SYN lost and retried.
func refusedAtOnce(t *testing.T, what string, ns *netlab.Netns, addr string) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, waitTimeout, true,
		func(context.Context) (bool, error) {
			_, last = dialTCP(ns, addr, attempt)
			return errors.Is(last, syscall.ECONNREFUSED), nil
		})
	if err != nil {
		t.Fatalf("%s: no connection refused within %v (last: %v)", what, waitTimeout, last)
	}
	if dur, err := dialTCP(ns, addr, attempt); !errors.Is(err, syscall.ECONNREFUSED) || dur > refusedWithin {
		t.Errorf("%s: %v after %v, want connection refused within %v", what, err, dur, refusedWithin)
	}
}
