package labkit

import (
	"context"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/e2e/netlab"
)

// The lab's nodes, shared by the Layer 2 and the BGP labs: three nodes on
// one LAN, a pod behind each.
//
//	n1 192.0.2.11 ───────┐ br0 (in its own namespace)
//	n2 192.0.2.12 ───────┤   pod a1 198.51.100.1   (behind n1)
//	n3 192.0.2.13 ───────┘   pod b1 198.51.100.17  (n2), c1 198.51.100.33 (n3)
//
// IPv6 alike: nodes 2001:db8::11-13, pods in 2001:db8:1::/64, :2::/64,
// :3::/64.
var (
	L2Nodes = []struct {
		Name, IP, IP6, Pod, PodIP, PodIP6 string
	}{
		{"n1", "192.0.2.11", "2001:db8::11", "a1", "198.51.100.1", "2001:db8:1::1"},
		{"n2", "192.0.2.12", "2001:db8::12", "b1", "198.51.100.17", "2001:db8:2::17"},
		{"n3", "192.0.2.13", "2001:db8::13", "c1", "198.51.100.33", "2001:db8:3::33"},
	}
)

// Resources of herald's CRDs.
var (
	PoolGVR    = v1alpha1.SchemeGroupVersion.WithResource("ipaddresspools")
	AdGVR      = v1alpha1.SchemeGroupVersion.WithResource("l2advertisements")
	BGPPeerGVR = v1alpha1.SchemeGroupVersion.WithResource("bgppeers")
	BGPAdGVR   = v1alpha1.SchemeGroupVersion.WithResource("bgpadvertisements")
)

// NodeLab is the part of a lab every protocol shares: the real apiserver,
// the nodes with their pods and echo servers, herald-ccm and one
// herald-agent per node.
type NodeLab struct {
	t       netlab.T
	bin     Binaries
	dir     string
	apiAddr string
	// agentArgs are every herald-agent's flags besides the kubeconfig and
	// the node name.
	agentArgs []string

	Cluster *cluster.Cluster
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	Net     *netlab.Lab
	Nodes   map[string]*netlab.Node
	Pods    map[string]*netlab.Host
	Agents  map[string]*cluster.Process
	CCM     *cluster.Process
}

// newNodes builds the network lab's nodes and pods around c and installs
// herald's CRDs; no herald component runs yet.
func newNodes(t netlab.T, c *cluster.Cluster, bin Binaries, crdDir, dir string, agentArgs []string) *NodeLab {
	t.Helper()
	kube, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	l := &NodeLab{t: t, bin: bin, dir: dir, agentArgs: agentArgs, apiAddr: strings.TrimPrefix(c.Config.Host, "https://"),
		Cluster: c, Kube: kube, Dynamic: dynamic.NewForConfigOrDie(c.Config), Net: netlab.New(t),
		Nodes: map[string]*netlab.Node{}, Pods: map[string]*netlab.Host{}, Agents: map[string]*cluster.Process{}}
	InstallCRDs(t, c, crdDir)
	for _, n := range L2Nodes {
		node := l.Net.AddNode(n.Name, netip.MustParseAddr(n.IP))
		l.Net.AddIPv6(&node.Host, netip.MustParseAddr(n.IP6), true)
		pod := node.AddPod(n.Pod, netip.MustParseAddr(n.PodIP))
		node.AddPodIPv6(pod, netip.MustParseAddr(n.PodIP6))
		l.Nodes[n.Name], l.Pods[n.Pod] = node, pod
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
		StartEcho(t, l.Net, bin, dir, l.Pods[n.Pod])
	}
	return l
}

// startHerald runs herald-ccm and an agent on every node, and waits until
// every agent is ready.
func (l *NodeLab) startHerald() {
	l.t.Helper()
	l.CCM = StartCCM(l.t, l.Cluster, l.bin, l.dir, "backend: bare-metal\nbareMetal:\n  pools: []\n")
	for _, n := range L2Nodes {
		RegisterNode(l.t, l.Kube, l.Nodes[n.Name])
		l.Net.Forward(l.Nodes[n.Name].Netns, l.apiAddr)
		l.StartAgent(n.Name)
	}
	for _, n := range L2Nodes {
		l.WaitAgentReady(n.Name)
	}
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// CreateObject creates one of herald's cluster-scoped objects.
func (l *NodeLab) CreateObject(gvr schema.GroupVersionResource, kind, name string, spec map[string]any) {
	l.t.Helper()
	CreateObject(l.t, l.Dynamic, gvr, kind, name, spec)
}

// CreateObject creates one of herald's cluster-scoped objects (kind, in
// herald.dev/v1alpha1) through dyn.
func CreateObject(t netlab.T, dyn dynamic.Interface, gvr schema.GroupVersionResource, kind, name string, spec map[string]any) {
	t.Helper()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": kind,
		"metadata": map[string]any{"name": name}, "spec": spec,
	}}
	if _, err := dyn.Resource(gvr).Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating %s %s: %v", kind, name, err)
	}
}

// StartAgent runs herald-agent on node with the lab's flags.
func (l *NodeLab) StartAgent(node string) *cluster.Process {
	l.t.Helper()
	args := append([]string{"--kubeconfig=" + l.Cluster.Kubeconfig, "--node-name=" + node}, l.agentArgs...)
	p := StartAgent(l.t, l.Net, l.bin, l.dir, l.Nodes[node], args...)
	l.Agents[node] = p
	return p
}

// WaitAgentReady waits for node's agent's /readyz.
func (l *NodeLab) WaitAgentReady(node string) {
	l.t.Helper()
	WaitAgentReady(l.t, l.Nodes[node], l.Agents[node])
}

// ServiceOptions shape CreateService's Service.
type ServiceOptions struct {
	Families []v1.IPFamily
	// Local sets externalTrafficPolicy Local.
	Local bool
	// EndpointNodes are the nodes whose pods are the endpoints; nil: all.
	EndpointNodes []string
	// Annotations are the Service's (e.g. a requested address).
	Annotations map[string]string
}

// CreateService creates Service namespace/name of type LoadBalancer with
// one port, 80, to the echo pods on every node, in the given families, and
// waits for its addresses.
func (l *NodeLab) CreateService(namespace, name string, families ...v1.IPFamily) *v1.Service {
	l.t.Helper()
	return l.CreateServiceWith(namespace, name, ServiceOptions{Families: families})
}

// CreateServiceWith is CreateService with options.
func (l *NodeLab) CreateServiceWith(namespace, name string, opts ServiceOptions) *v1.Service {
	l.t.Helper()
	families := opts.Families
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Annotations: opts.Annotations},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, IPFamilies: families,
			Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80}}},
	}
	if len(families) > 1 {
		svc.Spec.IPFamilyPolicy = ptr.To(v1.IPFamilyPolicyRequireDualStack)
	}
	if opts.Local {
		svc.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	}
	if _, err := l.Kube.CoreV1().Services(namespace).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
		l.t.Fatal(err)
	}
	l.SetServiceEndpoints(namespace, name, families, opts.EndpointNodes)
	return l.WaitService(namespace, name, "has its addresses", func(s *v1.Service) bool {
		return len(s.Status.LoadBalancer.Ingress) == max(len(families), 1)
	})
}

// SetServiceEndpoints makes the pods of nodes (nil: every node) the
// Service's endpoints, in each family.
func (l *NodeLab) SetServiceEndpoints(namespace, name string, families []v1.IPFamily, nodes []string) {
	l.t.Helper()
	for _, f := range families {
		family, eps := discoveryv1.AddressTypeIPv4, []Endpoint{}
		for _, n := range L2Nodes {
			if nodes != nil && !slices.Contains(nodes, n.Name) {
				continue
			}
			ip := n.PodIP
			if f == v1.IPv6Protocol {
				family, ip = discoveryv1.AddressTypeIPv6, n.PodIP6
			}
			eps = append(eps, Endpoint{IP: netip.MustParseAddr(ip), Node: n.Name})
		}
		if f == v1.IPv6Protocol {
			family = discoveryv1.AddressTypeIPv6
		}
		SetEndpoints(l.t, l.Kube, namespace, name, family, eps...)
	}
}

// WaitService polls until cond holds for the Service, and returns it.
func (l *NodeLab) WaitService(namespace, name, what string, cond func(*v1.Service) bool) *v1.Service {
	l.t.Helper()
	return WaitService(l.t, l.Kube, namespace, name, what, cond)
}

// LogDir is where the lab's processes log.
func (l *NodeLab) LogDir() string { return filepath.Clean(l.dir) }
