package labkit

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
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
	L2Nodes = []struct {
		Name, IP, IP6, Pod, PodIP, PodIP6 string
	}{
		{"n1", "192.0.2.11", "2001:db8::11", "a1", "198.51.100.1", "2001:db8:1::1"},
		{"n2", "192.0.2.12", "2001:db8::12", "b1", "198.51.100.17", "2001:db8:2::17"},
		{"n3", "192.0.2.13", "2001:db8::13", "c1", "198.51.100.33", "2001:db8:3::33"},
	}
	L2PoolAddresses = []string{"192.0.2.200-192.0.2.209", "2001:db8::200-2001:db8::209"}
	L2ClientIP      = netip.MustParseAddr("192.0.2.100")
	L2ClientIP6     = netip.MustParseAddr("2001:db8::100")
)

// Resources of herald's CRDs.
var (
	PoolGVR = v1alpha1.SchemeGroupVersion.WithResource("ipaddresspools")
	AdGVR   = v1alpha1.SchemeGroupVersion.WithResource("l2advertisements")
)

// L2Options configure StartL2.
type L2Options struct {
	Bin Binaries
	// CRDDir holds herald's CRDs (charts/herald/crds).
	CRDDir string
	// Dir receives logs and the cloud config.
	Dir string
	// AgentArgs are added to every herald-agent's flags.
	AgentArgs []string
}

// L2 is the running Layer 2 lab with herald-ccm and one herald-agent per
// node, forwarding and announcing.
type L2 struct {
	t       netlab.T
	opts    L2Options
	apiAddr string

	Cluster *cluster.Cluster
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	Net     *netlab.Lab
	Client  *netlab.Host
	Nodes   map[string]*netlab.Node
	Pods    map[string]*netlab.Host
	Agents  map[string]*cluster.Process
	CCM     *cluster.Process
	// NodeOfMAC names the node behind each LAN hardware address.
	NodeOfMAC map[string]string
}

// StartL2 builds the lab around the running cluster c and waits until
// every agent is ready.
func StartL2(t netlab.T, c *cluster.Cluster, opts L2Options) *L2 {
	t.Helper()
	kube, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	l := &L2{t: t, opts: opts, apiAddr: strings.TrimPrefix(c.Config.Host, "https://"),
		Cluster: c, Kube: kube, Dynamic: dynamic.NewForConfigOrDie(c.Config), Net: netlab.New(t),
		Nodes: map[string]*netlab.Node{}, Pods: map[string]*netlab.Host{}, Agents: map[string]*cluster.Process{},
		NodeOfMAC: map[string]string{}}
	InstallCRDs(t, c, opts.CRDDir)
	l.Client = l.Net.AddClient("client", L2ClientIP)
	l.Net.AddIPv6(l.Client, L2ClientIP6, false)
	for _, n := range L2Nodes {
		node := l.Net.AddNode(n.Name, netip.MustParseAddr(n.IP))
		l.Net.AddIPv6(&node.Host, netip.MustParseAddr(n.IP6), true)
		pod := node.AddPod(n.Pod, netip.MustParseAddr(n.PodIP))
		node.AddPodIPv6(pod, netip.MustParseAddr(n.PodIP6))
		l.Nodes[n.Name], l.Pods[n.Pod] = node, pod
		mac, err := node.MAC()
		if err != nil {
			t.Fatal(err)
		}
		l.NodeOfMAC[mac.String()] = n.Name
	}
	// Every node routes the other nodes' pods, as a CNI would.
	for _, n := range L2Nodes {
		for _, o := range L2Nodes {
			if o.Name != n.Name {
				l.Net.Route(&l.Nodes[n.Name].Host, netip.PrefixFrom(netip.MustParseAddr(o.PodIP), 32), l.Nodes[o.Name].IP)
				l.Net.Route(&l.Nodes[n.Name].Host, netip.PrefixFrom(netip.MustParseAddr(o.PodIP6), 128), l.Nodes[o.Name].IP6)
			}
		}
	}
	for _, n := range L2Nodes {
		StartEcho(t, l.Net, opts.Bin, opts.Dir, l.Pods[n.Pod])
	}
	l.createObject(PoolGVR, "IPAddressPool", "lab", map[string]any{"addresses": toAny(L2PoolAddresses)})
	l.createObject(AdGVR, "L2Advertisement", "lab", map[string]any{"ipAddressPools": []any{"lab"}})
	l.CCM = StartCCM(t, c, opts.Bin, opts.Dir, "backend: bare-metal\nbareMetal:\n  pools: []\n")
	for _, n := range L2Nodes {
		RegisterNode(t, kube, l.Nodes[n.Name])
		l.Net.Forward(l.Nodes[n.Name].Netns, l.apiAddr)
		l.StartAgent(n.Name)
	}
	for _, n := range L2Nodes {
		l.WaitAgentReady(n.Name)
	}
	return l
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func (l *L2) createObject(gvr schema.GroupVersionResource, kind, name string, spec map[string]any) {
	l.t.Helper()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": kind,
		"metadata": map[string]any{"name": name}, "spec": spec,
	}}
	if _, err := l.Dynamic.Resource(gvr).Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
		l.t.Fatalf("creating %s %s: %v", kind, name, err)
	}
}

// StartAgent runs herald-agent on node, forwarding and announcing.
func (l *L2) StartAgent(node string) *cluster.Process {
	l.t.Helper()
	args := append([]string{
		"--kubeconfig=" + l.Cluster.Kubeconfig,
		"--node-name=" + node,
		"--cluster-cidr=198.51.100.0/24,2001:db8:1::/64,2001:db8:2::/64,2001:db8:3::/64",
		"--min-sync-period=100ms",
		"--announce=layer2",
		"--v=2",
	}, l.opts.AgentArgs...)
	p := StartAgent(l.t, l.Net, l.opts.Bin, l.opts.Dir, l.Nodes[node], args...)
	l.Agents[node] = p
	return p
}

// WaitAgentReady waits for node's agent's /readyz.
func (l *L2) WaitAgentReady(node string) {
	l.t.Helper()
	WaitAgentReady(l.t, l.Nodes[node], l.Agents[node])
}

// CreateService creates Service namespace/name of type LoadBalancer with
// one port, 80, to the echo pods on every node, in the given families, and
// waits for its addresses.
func (l *L2) CreateService(namespace, name string, families ...v1.IPFamily) *v1.Service {
	l.t.Helper()
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, IPFamilies: families,
			Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80}}},
	}
	if len(families) > 1 {
		svc.Spec.IPFamilyPolicy = ptr.To(v1.IPFamilyPolicyRequireDualStack)
	}
	if _, err := l.Kube.CoreV1().Services(namespace).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
		l.t.Fatal(err)
	}
	for _, f := range families {
		family, eps := discoveryv1.AddressTypeIPv4, []Endpoint(nil)
		for _, n := range L2Nodes {
			ip := n.PodIP
			if f == v1.IPv6Protocol {
				family, ip = discoveryv1.AddressTypeIPv6, n.PodIP6
			}
			eps = append(eps, Endpoint{IP: netip.MustParseAddr(ip), Node: n.Name})
		}
		SetEndpoints(l.t, l.Kube, namespace, name, family, eps...)
	}
	return l.WaitService(namespace, name, "has its addresses", func(s *v1.Service) bool {
		return len(s.Status.LoadBalancer.Ingress) == max(len(families), 1)
	})
}

// WaitService polls until cond holds for the Service, and returns it.
func (l *L2) WaitService(namespace, name, what string, cond func(*v1.Service) bool) *v1.Service {
	l.t.Helper()
	return WaitService(l.t, l.Kube, namespace, name, what, cond)
}

// WaitService polls until cond holds for the Service, and returns it.
func WaitService(t netlab.T, client kubernetes.Interface, namespace, name, what string, cond func(*v1.Service) bool) *v1.Service {
	t.Helper()
	return WaitServiceWithin(t, client, namespace, name, what, WaitTimeout, cond)
}

// WaitServiceWithin is WaitService with a timeout of its own.
func WaitServiceWithin(t netlab.T, client kubernetes.Interface, namespace, name, what string, timeout time.Duration,
	cond func(*v1.Service) bool) *v1.Service {
	t.Helper()
	var last *v1.Service
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, timeout, true,
		func(ctx context.Context) (bool, error) {
			svc, err := client.CoreV1().Services(namespace).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil //nolint:nilerr // the apiserver may be busy; keep polling until the timeout
			}
			last = svc
			return cond(svc), nil
		})
	if err != nil {
		var status any
		var finalizers []string
		if last != nil {
			status, finalizers = last.Status, last.Finalizers
		}
		t.Fatalf("service %s/%s: %s: not within %v; last seen: status=%+v finalizers=%v", namespace, name, what, timeout,
			status, finalizers)
	}
	return last
}

// Announcer returns the node the Service's Announced condition names, if
// it is True.
func Announcer(svc *v1.Service) (string, bool) {
	c := meta.FindStatusCondition(svc.Status.Conditions, speaker.ConditionAnnounced)
	if c == nil || c.Status != metav1.ConditionTrue {
		return "", false
	}
	_, rest, found := strings.Cut(c.Message, "Announced by node ")
	if !found {
		return "", false
	}
	node, _, _ := strings.Cut(rest, " ")
	return node, true
}

// WaitAnnouncer waits until the Service is announced by a node ok accepts
// and returns it.
func (l *L2) WaitAnnouncer(namespace, name, what string, ok func(node string) bool) string {
	l.t.Helper()
	var node string
	l.WaitService(namespace, name, what, func(s *v1.Service) bool {
		n, announced := Announcer(s)
		node = n
		return announced && ok(n)
	})
	return node
}

// VIP returns the Service's address of one family.
func VIP(svc *v1.Service, v6 bool) (netip.Addr, bool) {
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(ing.IP); err == nil && a.Is6() == v6 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// MACOf returns the LAN hardware address of node.
func (l *L2) MACOf(node string) string {
	for mac, n := range l.NodeOfMAC {
		if n == node {
			return mac
		}
	}
	return ""
}

// ClientNeighbour returns the hardware address the client's kernel has for
// ip, if any.
func (l *L2) ClientNeighbour(ip netip.Addr) (string, bool) {
	out, err := l.Client.Run("ip", "neigh", "show", ip.String())
	if err != nil {
		return "", false
	}
	f := strings.Fields(out)
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1], true
		}
	}
	return "", false
}

// EntryNode returns the node a request to vip from the client entered by.
// With externalTrafficPolicy Cluster the node masquerades, so the echo pod
// sees the node's LAN address, except over IPv6 to a pod on that node,
// which sees the node's address on the pod link (the same on every node):
// then the client's neighbour entry for vip tells which node it sent to.
func (l *L2) EntryNode(vip netip.Addr, a Answer) string {
	for _, n := range L2Nodes {
		if a.From.Addr() == netip.MustParseAddr(n.IP) || a.From.Addr() == netip.MustParseAddr(n.IP6) {
			return n.Name
		}
	}
	if mac, ok := l.ClientNeighbour(vip); ok {
		if node, ok := l.NodeOfMAC[mac]; ok {
			return node
		}
	}
	return fmt.Sprintf("unknown(%s)", a.From.Addr())
}

// WaitTrafficVia polls addr from the client until a request enters by a
// node ok accepts, and returns that node, the answer and when it came.
func (l *L2) WaitTrafficVia(addr string, ok func(string) bool, timeout time.Duration) (string, Answer, time.Time) {
	l.t.Helper()
	vip := netip.MustParseAddrPort(addr).Addr()
	deadline := time.Now().Add(timeout)
	var last error
	var lastVia string
	for time.Now().Before(deadline) {
		a, err := Get(l.Client.Netns, addr, 100*time.Millisecond)
		if err == nil {
			at := time.Now()
			if lastVia = l.EntryNode(vip, a); ok(lastVia) {
				return lastVia, a, at
			}
		} else {
			last = err
		}
		time.Sleep(10 * time.Millisecond)
	}
	l.t.Fatalf("no request to %s entered by the expected node within %v (last via %q, last error %v)", addr, timeout, lastVia, last)
	return "", Answer{}, time.Time{}
}

// LogDir is where the lab's processes log.
func (l *L2) LogDir() string { return filepath.Clean(l.opts.Dir) }
