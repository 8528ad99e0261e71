package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/e2e/netlab"
)

// newNetEnv builds the root tier's lab and starts herald-agent on each node:
//
//	client 192.0.2.100 ─┐
//	                    ├─ LAN bridge (192.0.2.0/24)
//	n1 192.0.2.11 ──────┤    pods a1 198.51.100.1, a2 198.51.100.2
//	n2 192.0.2.12 ──────┘    pod  b1 198.51.100.17
//
// The client routes each node's pods (and the VIP, 198.51.100.200) via that
// node, as a router announcing them would; nodes route each other's pods.
// Every host has an IPv6 address too: client 2001:db8::100, nodes
// 2001:db8::11 and ::12, pods in 2001:db8:1::/64 (n1) and 2001:db8:2::/64 (n2).
func newNetEnv(t testing.TB) *netEnv {
	t.Helper()
	netlab.SkipUnlessAble(t)
	prefetchBinaries()
	c := cluster.StartForTest(t, cluster.Options{})
	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	lab := netlab.New(t)
	e := &netEnv{t: t, c: c, client: client, lab: lab, apiAddr: strings.TrimPrefix(c.Config.Host, "https://"),
		nodes: map[string]*netlab.Node{}, pods: map[string]*netlab.Host{}, podNode: map[string]string{},
		agents: map[string]*cluster.Process{}, dir: t.TempDir()}

	cl := lab.AddClient("client", clientIP)
	e.pods["client"] = cl
	n1 := lab.AddNode("n1", netip.MustParseAddr("192.0.2.11"))
	n2 := lab.AddNode("n2", netip.MustParseAddr("192.0.2.12"))
	e.nodes["n1"], e.nodes["n2"] = n1, n2
	for _, p := range []struct {
		node *netlab.Node
		name string
		ip   string
	}{{n1, "a1", "198.51.100.1"}, {n1, "a2", "198.51.100.2"}, {n2, "b1", "198.51.100.17"}} {
		e.pods[p.name] = p.node.AddPod(p.name, netip.MustParseAddr(p.ip))
		e.podNode[p.name] = p.node.Short
	}
	n1Pods, n2Pods := netip.MustParsePrefix("198.51.100.0/28"), netip.MustParsePrefix("198.51.100.16/28")
	lab.Route(cl, n1Pods, n1.IP)
	lab.Route(cl, n2Pods, n2.IP)
	lab.Route(cl, netip.PrefixFrom(vip, 32), n1.IP)
	lab.Route(&n1.Host, n2Pods, n2.IP)
	lab.Route(&n2.Host, n1Pods, n1.IP)

	// IPv6 beside IPv4 on every host, routed the same way.
	lab.AddIPv6(cl, clientIP6, false)
	lab.AddIPv6(&n1.Host, netip.MustParseAddr("2001:db8::11"), true)
	lab.AddIPv6(&n2.Host, netip.MustParseAddr("2001:db8::12"), true)
	for p, ip := range map[string]string{"a1": "2001:db8:1::1", "a2": "2001:db8:1::2", "b1": "2001:db8:2::17"} {
		e.nodes[e.podNode[p]].AddPodIPv6(e.pods[p], netip.MustParseAddr(ip))
	}
	lab.Route(cl, podCIDR6[0], n1.IP6)
	lab.Route(cl, podCIDR6[1], n2.IP6)
	lab.Route(&n1.Host, podCIDR6[1], n2.IP6)
	lab.Route(&n2.Host, podCIDR6[0], n1.IP6)

	for _, p := range []string{"a1", "a2", "b1"} {
		e.startEcho(t, e.pods[p])
	}
	// The plumbing works before herald is involved: the client reaches every
	// pod directly and the pod sees the client's own address.
	for _, p := range []string{"a1", "a2", "b1"} {
		addr := hostPort(e.pods[p].IP.String(), echoPort)
		eventually(t, "client reaches "+p+" directly", func() (answer, error) { return get(cl.Netns, addr) },
			func(a answer) bool { return a.Pod == p && a.From.Addr() == clientIP })
		addr6 := hostPort(e.pods[p].IP6.String(), echoPort)
		eventually(t, "client reaches "+p+" directly over IPv6", func() (answer, error) { return get(cl.Netns, addr6) },
			func(a answer) bool { return a.Pod == p && a.From.Addr() == clientIP6 })
	}

	for _, n := range []*netlab.Node{n1, n2} {
		e.createNode(t, n)
		lab.Forward(n.Netns, e.apiAddr)
		e.startAgent(t, n.Short)
	}
	for _, n := range []string{"n1", "n2"} {
		e.waitAgentReady(t, n)
	}
	return e
}

func (e *netEnv) client4() *netlab.Netns { return e.pods["client"].Netns }

func (e *netEnv) createService(t testing.TB, svc *v1.Service) *v1.Service {
	t.Helper()
	return createService(t, e.client, svc)
}

// TestNetnsDataplane is the root network tier: real packets through real
// nftables rules that herald-agent derives from a real apiserver. The
// subtests share the lab but not state: each creates the Services it
// checks and puts back any agent it restarts, so any one of them runs alone
// (go test -run 'TestNetnsDataplane/<name>') as well as after the others.
func TestNetnsDataplane(t *testing.T) {
	began := time.Now()
	e := newNetEnv(t)
	t.Logf("lab with two agents ready in %v", time.Since(began).Round(time.Millisecond))
	n1, n2, cl := e.nodes["n1"].Netns, e.nodes["n2"].Netns, e.client4()
	all := map[string]bool{"a1": true, "a2": true, "b1": true}
	inSet := func(set map[string]bool) func(answer) error {
		return func(a answer) error {
			if !set[a.Pod] {
				return fmt.Errorf("answer from %s %v, want one of %v", a.Pod, a.From, set)
			}
			return nil
		}
	}

	web := e.createService(t, echoService("web", v1.ServiceTypeNodePort))
	e.setEndpoints(t, "web", "a1", "a2", "b1")
	webTCP := hostPort(web.Spec.ClusterIP, portOf(web, "http", false))

	t.Run("ClusterIP from a node", func(t *testing.T) {
		for _, n := range []*netlab.Netns{n1, n2} {
			eventually(t, "ClusterIP from "+n.Name, func() (answer, error) { return get(n, webTCP) }, anyAnswer)
			seen := podsOf(t, 20, func() (answer, error) { return get(n, webTCP) }, inSet(all))
			if len(seen) < 2 {
				t.Errorf("20 connections from %s all went to %v: no load balancing", n.Name, seen)
			}
		}
	})

	t.Run("ClusterIP from a pod, hairpin included", func(t *testing.T) {
		a1 := e.pods["a1"]
		hairpins := 0
		eventually(t, "ClusterIP from a1", func() (answer, error) { return get(a1.Netns, webTCP) }, anyAnswer)
		podsOf(t, 30, func() (answer, error) { return get(a1.Netns, webTCP) }, func(a answer) error {
			if err := inSet(all)(a); err != nil {
				return err
			}
			switch {
			case a.Pod == "a1":
				// A pod reaching itself must see another address, or it
				// would answer itself directly and drop the reply.
				hairpins++
				if a.From.Addr() == a1.IP {
					return fmt.Errorf("hairpin: a1 saw its own address %v", a.From)
				}
			case a.From.Addr() != a1.IP:
				// From inside --cluster-cidr: no masquerade.
				return fmt.Errorf("%s saw %v, want a1's address %v", a.Pod, a.From, a1.IP)
			}
			return nil
		})
		if hairpins == 0 {
			t.Error("30 connections from a1 never reached a1 itself: hairpin untested")
		}
	})

	t.Run("NodePort from an outside client", func(t *testing.T) {
		for _, node := range []*netlab.Node{e.nodes["n1"], e.nodes["n2"]} {
			addr := hostPort(node.IP.String(), portOf(web, "http", true))
			eventually(t, "NodePort on "+node.Short, func() (answer, error) { return get(cl, addr) }, anyAnswer)
			seen := podsOf(t, 20, func() (answer, error) { return get(cl, addr) }, func(a answer) error {
				if err := inSet(all)(a); err != nil {
					return err
				}
				// Policy Cluster: the pod may be on the other node, so the
				// node masquerades; the pod sees a node, never the client.
				if a.From.Addr() == clientIP {
					return fmt.Errorf("%s saw the client address %v under externalTrafficPolicy Cluster", a.Pod, a.From)
				}
				return nil
			})
			if len(seen) < 2 {
				t.Errorf("20 connections to %s all went to %v", addr, seen)
			}
		}
	})

	t.Run("UDP through ClusterIP and NodePort", func(t *testing.T) {
		clusterUDP := hostPort(web.Spec.ClusterIP, portOf(web, "udp", false))
		nodeUDP := hostPort(e.nodes["n2"].IP.String(), portOf(web, "udp", true))
		eventually(t, "UDP ClusterIP from n1", func() (answer, error) { return askUDP(n1, clusterUDP) }, anyAnswer)
		podsOf(t, 10, func() (answer, error) { return askUDP(n1, clusterUDP) }, inSet(all))
		eventually(t, "UDP NodePort from the client", func() (answer, error) { return askUDP(cl, nodeUDP) }, anyAnswer)
		podsOf(t, 10, func() (answer, error) { return askUDP(cl, nodeUDP) }, inSet(all))
	})

	t.Run("IPv6: ClusterIP from a node, NodePort from the client", func(t *testing.T) {
		svc := echoService("web6", v1.ServiceTypeNodePort)
		svc.Spec.IPFamilyPolicy = ptr.To(v1.IPFamilyPolicyRequireDualStack)
		svc.Spec.IPFamilies = []v1.IPFamily{v1.IPv6Protocol, v1.IPv4Protocol}
		web6 := e.createService(t, svc)
		e.setEndpointsFamily(t, "web6", discoveryv1.AddressTypeIPv6, "a1", "a2", "b1")
		clusterIP := web6.Spec.ClusterIPs[0]
		if !netip.MustParseAddr(clusterIP).Is6() {
			t.Fatalf("primary ClusterIP %s is not IPv6", clusterIP)
		}
		for _, target := range []struct {
			what string
			ns   *netlab.Netns
			addr string
		}{
			{"ClusterIP from n1", n1, hostPort(clusterIP, 80)},
			{"NodePort on n2 from the client", cl, hostPort(e.nodes["n2"].IP6.String(), portOf(web6, "http", true))},
		} {
			eventually(t, target.what, func() (answer, error) { return get(target.ns, target.addr) }, anyAnswer)
			seen := podsOf(t, 20, func() (answer, error) { return get(target.ns, target.addr) }, inSet(all))
			if len(seen) < 2 {
				t.Errorf("%s: 20 connections all went to %v", target.what, seen)
			}
		}
		udp := hostPort(clusterIP, portOf(web6, "udp", false))
		eventually(t, "UDP ClusterIP from n1", func() (answer, error) { return askUDP(n1, udp) }, anyAnswer)
	})

	t.Run("externalTrafficPolicy Local keeps the client IP and stays local", func(t *testing.T) {
		svc := echoService("local", v1.ServiceTypeLoadBalancer)
		svc.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		local := e.createService(t, svc)
		e.setEndpoints(t, "local", "a1", "a2", "b1")
		for node, pods := range map[string]map[string]bool{"n1": {"a1": true, "a2": true}, "n2": {"b1": true}} {
			addr := hostPort(e.nodes[node].IP.String(), portOf(local, "http", true))
			eventually(t, "NodePort on "+node, func() (answer, error) { return get(cl, addr) }, anyAnswer)
			podsOf(t, 20, func() (answer, error) { return get(cl, addr) }, func(a answer) error {
				if err := inSet(pods)(a); err != nil {
					return fmt.Errorf("%s: %w", node, err)
				}
				if a.From.Addr() != clientIP {
					return fmt.Errorf("%s saw %v, want the client address %v", a.Pod, a.From, clientIP)
				}
				return nil
			})
		}
		udp := hostPort(e.nodes["n2"].IP.String(), portOf(local, "udp", true))
		a := eventually(t, "UDP NodePort on n2", func() (answer, error) { return askUDP(cl, udp) }, anyAnswer)
		if a.Pod != "b1" || a.From.Addr() != clientIP {
			t.Errorf("UDP NodePort on n2 answered %+v, want b1 seeing %v", a, clientIP)
		}
	})

	t.Run("healthCheckNodePort follows local endpoints", func(t *testing.T) {
		svc := echoService("hc-local", v1.ServiceTypeLoadBalancer)
		svc.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		local := e.createService(t, svc)
		e.setEndpoints(t, "hc-local", "a1", "a2", "b1")
		if local.Spec.HealthCheckNodePort == 0 {
			t.Fatal("the apiserver allocated no healthCheckNodePort")
		}
		hc := func(node string) string {
			return "http://" + hostPort(e.nodes[node].IP.String(), local.Spec.HealthCheckNodePort) + "/"
		}
		e.waitHealth(t, hc("n1"), http.StatusOK)
		e.waitHealth(t, hc("n2"), http.StatusOK)

		e.setEndpoints(t, "hc-local", "a1", "a2")
		e.waitHealth(t, hc("n2"), http.StatusServiceUnavailable)
		e.waitHealth(t, hc("n1"), http.StatusOK)
		// n2 has no local endpoint now: its NodePort drops (the client
		// retries elsewhere) rather than crossing to n1 and losing the
		// client address.
		dur, err := dialTCP(cl, hostPort(e.nodes["n2"].IP.String(), portOf(local, "http", true)), 300*time.Millisecond)
		if !isTimeout(err) {
			t.Errorf("NodePort on n2 without local endpoints: %v after %v, want a timeout (drop)", err, dur)
		}

		e.setEndpoints(t, "hc-local", "a1", "a2", "b1")
		e.waitHealth(t, hc("n2"), http.StatusOK)
	})

	t.Run("loadBalancerSourceRanges block", func(t *testing.T) {
		svc := echoService("fenced", v1.ServiceTypeLoadBalancer)
		svc.Spec.LoadBalancerSourceRanges = []string{clientIP.String() + "/32"}
		fenced := e.createService(t, svc)
		fenced.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: vip.String(), IPMode: ptr.To(v1.LoadBalancerIPModeVIP)}}
		fenced, err := e.client.CoreV1().Services("default").UpdateStatus(context.Background(), fenced, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		e.setEndpoints(t, "fenced", "a1", "b1")
		addr := hostPort(vip.String(), portOf(fenced, "http", false))
		// Allowed first: this proves the VIP is served, so the failure
		// below comes from the source ranges, not from missing rules.
		eventually(t, "allowed client reaches the VIP", func() (answer, error) { return get(cl, addr) }, anyAnswer)

		fenced.Spec.LoadBalancerSourceRanges = []string{"192.0.2.250/32"}
		if _, err := e.client.CoreV1().Services("default").Update(context.Background(), fenced, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		var last error
		err = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, waitTimeout, true,
			func(context.Context) (bool, error) {
				_, last = dialTCP(cl, addr, 300*time.Millisecond)
				return isTimeout(last), nil
			})
		if err != nil {
			t.Fatalf("client outside the source ranges still connects to the VIP (last: %v)", last)
		}
		for range 3 {
			if _, err := dialTCP(cl, addr, 300*time.Millisecond); !isTimeout(err) {
				t.Fatalf("blocked client: %v, want a timeout (dropped)", err)
			}
		}
		// The ClusterIP is not subject to the source ranges.
		eventually(t, "ClusterIP of the fenced Service from n1", func() (answer, error) {
			return get(n1, hostPort(fenced.Spec.ClusterIP, 80))
		}, anyAnswer)
	})

	t.Run("ClientIP affinity sticks", func(t *testing.T) {
		svc := echoService("sticky", v1.ServiceTypeNodePort)
		svc.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		svc.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
		sticky := e.createService(t, svc)
		e.setEndpoints(t, "sticky", "a1", "a2", "b1")
		for what, target := range map[string]struct {
			ns   *netlab.Netns
			addr string
		}{
			"ClusterIP from n1":        {n1, hostPort(sticky.Spec.ClusterIP, 80)},
			"NodePort from the client": {cl, hostPort(e.nodes["n2"].IP.String(), portOf(sticky, "http", true))},
		} {
			first := eventually(t, what, func() (answer, error) { return get(target.ns, target.addr) }, anyAnswer)
			seen := podsOf(t, 20, func() (answer, error) { return get(target.ns, target.addr) }, inSet(all))
			if len(seen) != 1 || seen[first.Pod] != 20 {
				t.Errorf("%s: 20 connections went to %v, want all to %s", what, seen, first.Pod)
			}
		}
	})

	t.Run("IPv6: ClientIP affinity sticks", func(t *testing.T) {
		// The IPv6 record rule is one nft 1.0.6 cannot write (it aborts on
		// its register use): the agent writes it over netlink.
		svc := echoService("sticky6", v1.ServiceTypeNodePort)
		svc.Spec.IPFamilyPolicy = ptr.To(v1.IPFamilyPolicyRequireDualStack)
		svc.Spec.IPFamilies = []v1.IPFamily{v1.IPv6Protocol, v1.IPv4Protocol}
		svc.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		svc.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](90)}}
		sticky := e.createService(t, svc)
		e.setEndpointsFamily(t, "sticky6", discoveryv1.AddressTypeIPv6, "a1", "a2", "b1")
		for _, target := range []struct {
			what string
			ns   *netlab.Netns
			addr string
		}{
			{"IPv6 ClusterIP from n1", n1, hostPort(sticky.Spec.ClusterIPs[0], 80)},
			{"IPv6 NodePort on n2 from the client", cl, hostPort(e.nodes["n2"].IP6.String(), portOf(sticky, "http", true))},
		} {
			first := eventually(t, target.what, func() (answer, error) { return get(target.ns, target.addr) }, anyAnswer)
			seen := podsOf(t, 20, func() (answer, error) { return get(target.ns, target.addr) }, inSet(all))
			if len(seen) != 1 || seen[first.Pod] != 20 {
				t.Errorf("%s: 20 connections went to %v, want all to %s", target.what, seen, first.Pod)
			}
		}
	})

	t.Run("periodic full resyncs reload elements and keep affinity", func(t *testing.T) {
		// Until the end of this subtest n1's agent does a full resync every
		// second. Each one reloads the elements over netlink, which must
		// neither disturb traffic nor forget ClientIP choices.
		e.restartAgent(t, "n1", "--sync-period=1s", "--full-sync-period=1s")
		t.Cleanup(func() { e.restartAgent(t, "n1") })
		svc := echoService("sticky-resync", v1.ServiceTypeClusterIP)
		svc.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		svc.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
		sticky := e.createService(t, svc)
		e.setEndpoints(t, "sticky-resync", "a1", "a2", "b1")
		target := hostPort(sticky.Spec.ClusterIP, 80)
		first := eventually(t, "sticky ClusterIP from n1", func() (answer, error) { return get(n1, target) }, anyAnswer)
		reloadsBefore := syncCount(t, n1, "reload")
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			seen := podsOf(t, 5, func() (answer, error) { return get(n1, target) }, inSet(all))
			if seen[first.Pod] != 5 {
				t.Fatalf("during full resyncs connections went to %v, want all to %s", seen, first.Pod)
			}
		}
		if reloads := syncCount(t, n1, "reload") - reloadsBefore; reloads < 2 {
			t.Fatalf("%v reload syncs in 3 s with --full-sync-period=1s, want at least 2", reloads)
		}
	})

	t.Run("no endpoints refuses at once", func(t *testing.T) {
		empty := e.createService(t, echoService("empty", v1.ServiceTypeNodePort))
		e.setEndpoints(t, "empty")
		for what, target := range map[string]struct {
			ns   *netlab.Netns
			addr string
		}{
			"ClusterIP from n1":        {n1, hostPort(empty.Spec.ClusterIP, 80)},
			"NodePort from the client": {cl, hostPort(e.nodes["n1"].IP.String(), portOf(empty, "http", true))},
		} {
			refusedAtOnce(t, what, target.ns, target.addr)
		}
	})

	t.Run("endpoint removal moves traffic within one sync", func(t *testing.T) {
		move := e.createService(t, echoService("move", v1.ServiceTypeClusterIP))
		addr := hostPort(move.Spec.ClusterIP, 80)
		e.setEndpoints(t, "move", "a1")
		eventually(t, "ClusterIP to a1", func() (answer, error) { return get(n1, addr) }, func(a answer) bool { return a.Pod == "a1" })

		start := time.Now()
		e.setEndpoints(t, "move", "b1")
		eventually(t, "traffic moves to b1", func() (answer, error) { return get(n1, addr) }, func(a answer) bool { return a.Pod == "b1" })
		moved := time.Since(start)
		t.Logf("traffic moved %v after the EndpointSlice update (min sync period %v)", moved.Round(time.Millisecond), minSyncPeriod)
		// One sync: the watch event, at most one min-sync-period wait, the
		// partial sync itself. The slack is for a busy 2-core machine;
		// without a sync the move would never happen.
		if limit := minSyncPeriod + 2*time.Second; moved > limit {
			t.Errorf("traffic moved after %v, want within one sync (%v)", moved, limit)
		}
		podsOf(t, 10, func() (answer, error) { return get(n1, addr) }, inSet(map[string]bool{"b1": true}))
	})

	t.Run("a UDP flow follows endpoint changes", func(t *testing.T) {
		// One connected socket keeps one source port, so every datagram
		// below belongs to one conntrack entry unless the agent deletes it.
		svc := echoService("udpflow", v1.ServiceTypeClusterIP)
		// Another proxy's label: herald ignores the Service for now, so the
		// flow starts un-NATed, as it does when datagrams race a new Service.
		svc.Labels = map[string]string{"service.kubernetes.io/service-proxy-name": "elsewhere"}
		flow := e.createService(t, svc)
		e.setEndpoints(t, "udpflow", "a1")
		ctx, cancel := context.WithTimeout(context.Background(), attempt)
		defer cancel()
		conn, err := n1.DialContext(ctx, "udp", hostPort(flow.Spec.ClusterIP, 80))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ask := func() (answer, error) { return askOn(conn) }
		if a, err := ask(); err == nil {
			t.Fatalf("a Service herald ignores answered: %+v", a)
		}

		flow.Labels = nil
		if _, err := e.client.CoreV1().Services("default").Update(context.Background(), flow, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the flow is served once herald takes the Service", ask, func(a answer) bool { return a.Pod == "a1" })

		start := time.Now()
		e.setEndpoints(t, "udpflow", "b1")
		eventually(t, "the flow moves to b1", ask, func(a answer) bool { return a.Pod == "b1" })
		t.Logf("the UDP flow moved %v after the EndpointSlice update", time.Since(start).Round(time.Millisecond))
		podsOf(t, 10, ask, inSet(map[string]bool{"b1": true}))
	})

	t.Run("agent restart keeps an established connection", func(t *testing.T) {
		addr := hostPort(e.nodes["n2"].IP.String(), portOf(web, "http", true))
		var conn *keepConn
		first := eventually(t, "connect to n2's NodePort", func() (answer, error) {
			var err error
			if conn, err = dialKeep(cl, addr); err != nil {
				return answer{}, err
			}
			a, err := conn.get()
			if err != nil {
				conn.conn.Close()
			}
			return a, err
		}, anyAnswer)
		defer conn.conn.Close()

		e.agents["n2"].Stop(10 * time.Second)
		if _, err := e.nodes["n2"].Run("nft", "list", "table", "inet", "herald"); err != nil {
			t.Fatalf("a stopped agent must leave its table: %v", err)
		}
		same := func(when string) {
			a, err := conn.get()
			if err != nil {
				t.Fatalf("%s: the established connection broke: %v", when, err)
			}
			if a != first {
				t.Fatalf("%s: answer %+v, want %+v (same pod, same connection)", when, a, first)
			}
		}
		same("agent stopped")
		e.startAgent(t, "n2")
		e.waitAgentReady(t, "n2")
		same("agent restarted")
		// The table it found is stamped with the skeleton it wants: its
		// first full sync only reloads the elements, keeping ClientIP
		// choices.
		if full, reload := syncCount(t, e.nodes["n2"].Netns, "full"), syncCount(t, e.nodes["n2"].Netns, "reload"); full != 0 || reload < 1 {
			t.Errorf("restarted agent: %v full syncs through nft and %v reloads, want 0 and at least 1", full, reload)
		}
		eventually(t, "new connections after the restart", func() (answer, error) { return get(cl, addr) }, anyAnswer)
	})

	t.Run("--cleanup removes the table", func(t *testing.T) {
		n := e.nodes["n2"]
		e.agents["n2"].Stop(10 * time.Second)
		t.Cleanup(func() { e.restartAgent(t, "n2") })
		out, err := n.Run(heraldBinary(t, "herald-agent"), "--cleanup")
		if err != nil {
			t.Fatalf("herald-agent --cleanup: %v", err)
		}
		tables, err := n.Run("nft", "list", "tables")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(tables, "inet herald") {
			t.Fatalf("after --cleanup (%s) the node still has the table:\n%s", strings.TrimSpace(out), tables)
		}
		// Nothing forwards NodePorts on n2 any more.
		if _, err := get(cl, hostPort(n.IP.String(), portOf(web, "http", true))); err == nil {
			t.Error("n2's NodePort still answers after --cleanup")
		}
	})
}

// waitHealth polls a healthCheckNodePort from the client until it answers
// with want.
func (e *netEnv) waitHealth(t testing.TB, url string, want int) {
	t.Helper()
	var code int
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, waitTimeout, true,
		func(context.Context) (bool, error) {
			code, last = getStatus(e.client4(), url)
			return last == nil && code == want, nil
		})
	if err != nil {
		t.Fatalf("%s: want %d within %v; last %d, %v", url, want, waitTimeout, code, last)
	}
}

// dialTCP opens (and closes) one TCP connection from ns and says how long
// the answer took, so that a test can tell a reset from a timeout.
func dialTCP(ns *netlab.Netns, addr string, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	conn, err := ns.DialContext(ctx, "tcp", addr)
	dur := time.Since(start)
	if err == nil {
		conn.Close()
	}
	return dur, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
