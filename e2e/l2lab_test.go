package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/speaker"
	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/e2e/netlab"
)

// The Layer 2 lab: three nodes and a client on one LAN, the VIPs in the
// LAN's own subnets, so the client finds them with ARP and NDP as it would
// on a real network; nothing routes them.
//
//	client 192.0.2.100 ──┐ br0 (in its own namespace)
//	n1 192.0.2.11 ───────┤   pod a1 198.51.100.1
//	n2 192.0.2.12 ───────┤   pod b1 198.51.100.17
//	n3 192.0.2.13 ───────┘   pod c1 198.51.100.33
//
// IPv6 alike: client 2001:db8::100, nodes 2001:db8::11-13, pods in
// 2001:db8:1::/64, :2::/64, :3::/64. Pool "lab": 192.0.2.200-209 and
// 2001:db8::200-209, announced by the L2Advertisement "lab".
var (
	l2Nodes = []struct {
		name, ip, ip6, pod, podIP, podIP6 string
	}{
		{"n1", "192.0.2.11", "2001:db8::11", "a1", "198.51.100.1", "2001:db8:1::1"},
		{"n2", "192.0.2.12", "2001:db8::12", "b1", "198.51.100.17", "2001:db8:2::17"},
		{"n3", "192.0.2.13", "2001:db8::13", "c1", "198.51.100.33", "2001:db8:3::33"},
	}
	l2PoolAddresses = []string{"192.0.2.200-192.0.2.209", "2001:db8::200-2001:db8::209"}
)

var adGVR = v1alpha1.SchemeGroupVersion.WithResource("l2advertisements")

// l2Env is the Layer 2 lab with herald-ccm and one herald-agent per node,
// forwarding and announcing.
type l2Env struct {
	*netEnv
	ccm *ccm
	// nodeOfMAC names the node behind each LAN hardware address.
	nodeOfMAC map[string]string
	nodeIP    map[string]netip.Addr // LAN IPv4 address by node
	agentArgs []string
}

func newL2Env(t testing.TB, agentArgs ...string) *l2Env {
	t.Helper()
	netlab.SkipUnlessAble(t)
	prefetchBinaries()
	c := cluster.StartForTest(t, cluster.Options{})
	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	installCRDs(t, c)
	kubectl(t, c, "wait", "--for=condition=Established", "--timeout=60s", "crd/l2advertisements.herald.dev")
	lab := netlab.New(t)
	e := &l2Env{netEnv: &netEnv{c: c, client: client, lab: lab, apiAddr: strings.TrimPrefix(c.Config.Host, "https://"),
		nodes: map[string]*netlab.Node{}, pods: map[string]*netlab.Host{}, podNode: map[string]string{},
		agents: map[string]*cluster.Process{}, dir: t.TempDir()},
		nodeOfMAC: map[string]string{}, nodeIP: map[string]netip.Addr{}, agentArgs: agentArgs}

	cl := lab.AddClient("client", clientIP)
	lab.AddIPv6(cl, clientIP6, false)
	e.pods["client"] = cl
	for _, n := range l2Nodes {
		node := lab.AddNode(n.name, netip.MustParseAddr(n.ip))
		lab.AddIPv6(&node.Host, netip.MustParseAddr(n.ip6), true)
		pod := node.AddPod(n.pod, netip.MustParseAddr(n.podIP))
		node.AddPodIPv6(pod, netip.MustParseAddr(n.podIP6))
		e.nodes[n.name], e.pods[n.pod], e.podNode[n.pod] = node, pod, n.name
		e.nodeIP[n.name] = node.IP
		mac, err := node.MAC()
		if err != nil {
			t.Fatal(err)
		}
		e.nodeOfMAC[mac.String()] = n.name
	}
	// Every node routes the other nodes' pods, as a CNI would.
	for _, n := range l2Nodes {
		for _, o := range l2Nodes {
			if o.name != n.name {
				lab.Route(&e.nodes[n.name].Host, netip.PrefixFrom(netip.MustParseAddr(o.podIP), 32), e.nodes[o.name].IP)
				lab.Route(&e.nodes[n.name].Host, netip.PrefixFrom(netip.MustParseAddr(o.podIP6), 128), e.nodes[o.name].IP6)
			}
		}
	}
	for _, n := range l2Nodes {
		e.startEcho(t, e.pods[n.pod])
	}
	dyn := dynamic.NewForConfigOrDie(c.Config)
	createPool(t, dyn.Resource(poolGVR), "lab", l2PoolAddresses...)
	createL2Advertisement(t, dyn.Resource(adGVR), "lab", map[string]any{"ipAddressPools": []any{"lab"}})
	e.ccm = startCCM(t, c, "backend: bare-metal\nbareMetal:\n  pools: []\n")
	for _, n := range l2Nodes {
		e.createNode(t, e.nodes[n.name])
		lab.Forward(e.nodes[n.name].Netns, e.apiAddr)
		e.startL2Agent(t, n.name)
	}
	for _, n := range l2Nodes {
		e.waitAgentReady(t, n.name)
	}
	return e
}

// startL2Agent runs herald-agent on node with forwarding and Layer 2.
func (e *l2Env) startL2Agent(t testing.TB, node string) *cluster.Process {
	t.Helper()
	return e.startAgent(t, node, append([]string{"--announce=layer2"}, e.agentArgs...)...)
}

func createL2Advertisement(t testing.TB, ads dynamic.ResourceInterface, name string, spec map[string]any) {
	t.Helper()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": "L2Advertisement",
		"metadata": map[string]any{"name": name}, "spec": spec,
	}}
	if _, err := ads.Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating L2Advertisement %s: %v", name, err)
	}
}

// createL2Service creates an echo Service of type LoadBalancer whose pods
// are on every node, waits for its address(es) and returns it.
func (e *l2Env) createL2Service(t testing.TB, name string, families ...v1.IPFamily) *v1.Service {
	t.Helper()
	svc := echoService(name, v1.ServiceTypeLoadBalancer)
	svc.Spec.IPFamilies = families
	if len(families) > 1 {
		svc.Spec.IPFamilyPolicy = ptr.To(v1.IPFamilyPolicyRequireDualStack)
	}
	e.createService(t, svc)
	var pods []string
	for _, n := range l2Nodes {
		pods = append(pods, n.pod)
	}
	for _, f := range families {
		family := discoveryv1.AddressTypeIPv4
		if f == v1.IPv6Protocol {
			family = discoveryv1.AddressTypeIPv6
		}
		e.setEndpointsFamily(t, name, family, pods...)
	}
	return waitForService(t, e.client, "default", name, "has its addresses", func(s *v1.Service) bool {
		return len(s.Status.LoadBalancer.Ingress) == max(len(families), 1)
	})
}

// announcer waits until the Service's Announced condition is True and
// returns the node it names.
func (e *l2Env) announcer(t testing.TB, name, what string, ok func(node string) bool) string {
	t.Helper()
	var node string
	waitForService(t, e.client, "default", name, what, func(s *v1.Service) bool {
		c := meta.FindStatusCondition(s.Status.Conditions, speaker.ConditionAnnounced)
		if c == nil || c.Status != metav1.ConditionTrue {
			return false
		}
		_, rest, found := strings.Cut(c.Message, "Announced by node ")
		if !found {
			return false
		}
		node, _, _ = strings.Cut(rest, " ")
		return ok(node)
	})
	return node
}

func anyNode(string) bool { return true }

// vipOf returns the Service's address of one family.
func vipOf(t testing.TB, svc *v1.Service, v6 bool) netip.Addr {
	t.Helper()
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if a := netip.MustParseAddr(ing.IP); a.Is6() == v6 {
			return a
		}
	}
	t.Fatalf("Service %s has no IPv6=%v address: %+v", svc.Name, v6, svc.Status.LoadBalancer.Ingress)
	return netip.Addr{}
}

// entryNode returns the node a request to vip from the client entered by.
// With externalTrafficPolicy Cluster the node masquerades, so the echo pod
// sees the node's LAN address, except over IPv6 to a pod on that node,
// which sees the node's address on the pod link (the same on every node):
// then the client's neighbour entry for vip tells which node it sent to.
func (e *l2Env) entryNode(vip netip.Addr, a answer) string {
	for _, n := range l2Nodes {
		if a.from.Addr() == netip.MustParseAddr(n.ip) || a.from.Addr() == netip.MustParseAddr(n.ip6) {
			return n.name
		}
	}
	if mac, ok := e.clientNeighbour(vip); ok {
		if node, ok := e.nodeOfMAC[mac]; ok {
			return node
		}
	}
	return fmt.Sprintf("unknown(%s)", a.from.Addr())
}

// waitTrafficVia polls the VIP from the client until a request enters by a
// node ok accepts, and returns that node and when it happened.
func (e *l2Env) waitTrafficVia(t testing.TB, addr string, ok func(string) bool, timeout time.Duration) (string, time.Time) {
	t.Helper()
	vip := netip.MustParseAddrPort(addr).Addr()
	deadline := time.Now().Add(timeout)
	var last error
	var lastVia string
	for time.Now().Before(deadline) {
		a, err := getWithin(e.client4(), addr, 100*time.Millisecond)
		if err == nil {
			at := time.Now()
			if lastVia = e.entryNode(vip, a); ok(lastVia) {
				return lastVia, at
			}
		} else {
			last = err
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no request to %s entered by the expected node within %v (last via %q, last error %v)", addr, timeout, lastVia, last)
	return "", time.Time{}
}

// getWithin is get with its own timeout: failover tests poll faster than
// one attempt lasts.
func getWithin(ns *netlab.Netns, addr string, timeout time.Duration) (answer, error) {
	c := httpClient(ns)
	c.Timeout = timeout
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return answer{}, err
	}
	return readAnswer(resp)
}

// waitAnnouncerStable waits until the Service's announcer has not changed
// for quiet: a node that comes back rejoins, settles and may take its
// addresses back, and a measurement must not start in the middle of that.
func (e *l2Env) waitAnnouncerStable(t testing.TB, name string, quiet time.Duration) string {
	t.Helper()
	last, since := "", time.Now()
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		node := e.announcer(t, name, "is announced", anyNode)
		if node != last {
			last, since = node, time.Now()
		}
		if time.Since(since) >= quiet {
			return last
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the announcer of %s kept changing for %v", name, waitTimeout)
	return ""
}
