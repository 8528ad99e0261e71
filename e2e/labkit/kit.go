// Package labkit runs herald's real components inside the network lab
// (e2e/netlab) against a real apiserver (e2e/cluster): echo "pods",
// herald-agent on nodes, herald-ccm, Nodes and EndpointSlices written as a
// kubelet and the EndpointSlice controller would. The end-to-end tests and
// `make demo` are built from it, so the demo shows exactly what the tests
// check.
package labkit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/e2e/netlab"
)

// Ports and timings shared by everything in the lab.
const (
	// EchoPort is where the echo pods listen, TCP (HTTP) and UDP.
	EchoPort = 8080
	// AgentHealthPort is herald-agent's default --health-bind-address port.
	AgentHealthPort = 10276
	// AgentMetricsAddr is herald-agent's default --metrics-bind-address.
	AgentMetricsAddr = "127.0.0.1:10279"
	// Attempt bounds one request: the lab is local, answers come in
	// milliseconds, and a lost packet must not stall a poll for long.
	Attempt = time.Second
	// WaitTimeout bounds every wait for the cluster to do something.
	WaitTimeout = 20 * time.Second
)

// Binaries are the programs the lab runs.
type Binaries struct {
	CCM, Agent, Echo string
}

// Answer is what the echo server said: which pod, and the client address
// it saw.
type Answer struct {
	Pod  string
	From netip.AddrPort
}

// ErrBadAnswer means a response was not the echo server's.
var ErrBadAnswer = errors.New("not an echo answer")

// ParseAnswer reads the echo server's one-line answer.
func ParseAnswer(s string) (Answer, error) {
	name, addr, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok {
		return Answer{}, fmt.Errorf("%w: %q", ErrBadAnswer, s)
	}
	from, err := netip.ParseAddrPort(addr)
	if err != nil {
		return Answer{}, fmt.Errorf("%w: %q: %w", ErrBadAnswer, s, err)
	}
	return Answer{Pod: name, From: from}, nil
}

// HTTPClient sends requests from inside ns, one connection per request,
// so every request gets a fresh load-balancing choice.
func HTTPClient(ns *netlab.Netns, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true},
	}
}

// Get asks the echo server behind addr (host:port) from inside ns.
func Get(ns *netlab.Netns, addr string, timeout time.Duration) (Answer, error) {
	resp, err := HTTPClient(ns, timeout).Get("http://" + addr + "/")
	if err != nil {
		return Answer{}, err
	}
	return ReadAnswer(resp)
}

// ReadAnswer parses an echo server's response and closes its body.
func ReadAnswer(resp *http.Response) (Answer, error) {
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return Answer{}, err
	}
	return ParseAnswer(string(body))
}

// StartEcho runs the echo server in pod's namespace until the lab goes.
func StartEcho(t netlab.T, lab *netlab.Lab, bin Binaries, logDir string, pod *netlab.Host) *cluster.Process {
	t.Helper()
	p, err := pod.Start("echo-"+pod.Short, filepath.Join(logDir, "echo-"+pod.Short+".log"),
		bin.Echo, "--name="+pod.Short, "--listen=:"+strconv.Itoa(EchoPort))
	if err != nil {
		t.Fatal(err)
	}
	lab.OnCleanup(func() { p.Stop(5 * time.Second) })
	return p
}

// StartAgent runs herald-agent in node's namespace with args (the caller
// passes --kubeconfig and --node-name among them); the lab stops it at the
// end, logging its tail if t failed.
func StartAgent(t netlab.T, lab *netlab.Lab, bin Binaries, logDir string, node *netlab.Node, args ...string) *cluster.Process {
	t.Helper()
	p, err := node.Start("herald-agent-"+node.Short,
		filepath.Join(logDir, fmt.Sprintf("herald-agent-%s-%d.log", node.Short, time.Now().UnixNano())), bin.Agent, args...)
	if err != nil {
		t.Fatal(err)
	}
	lab.OnCleanup(func() {
		if lab.Failed() {
			lab.Logf("herald-agent %s log (tail):\n%s", node.Short, p.LogTail(40))
		}
		p.Stop(5 * time.Second)
	})
	return p
}

// WaitAgentReady polls the agent's /readyz inside its node until it
// answers 200 (forwarding: its first full sync is in the kernel;
// announcing only: its caches are synced and it joined the membership).
func WaitAgentReady(t netlab.T, node *netlab.Node, agent *cluster.Process) {
	t.Helper()
	var lastErr error
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, WaitTimeout, true,
		func(context.Context) (bool, error) {
			if err := agent.ExitedErr(); err != nil {
				return false, err
			}
			resp, err := HTTPClient(node.Netns, Attempt).Get("http://127.0.0.1:" + strconv.Itoa(AgentHealthPort) + "/readyz")
			if err != nil {
				lastErr = err
				return false, nil
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK, nil
		})
	if err != nil {
		t.Fatalf("herald-agent on %s not ready: %v (last: %v)", node.Short, err, lastErr)
	}
}

// RegisterNode creates a Ready Node for a lab node, its LAN addresses as
// InternalIPs, as its kubelet would.
func RegisterNode(t netlab.T, client kubernetes.Interface, n *netlab.Node) {
	t.Helper()
	ctx := context.Background()
	node, err := client.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Short}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue,
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(), Reason: "KubeletReady"}}
	node.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: n.IP.String()}}
	if n.IP6.IsValid() {
		node.Status.Addresses = append(node.Status.Addresses, v1.NodeAddress{Type: v1.NodeInternalIP, Address: n.IP6.String()})
	}
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Endpoint is a ready pod of a Service: its address and node.
type Endpoint struct {
	IP   netip.Addr
	Node string
}

// SetEndpoints writes the Service's EndpointSlice of one family, as the
// EndpointSlice controller would, with the ports "http" (TCP) and "udp"
// both on EchoPort; no endpoints means an empty slice.
func SetEndpoints(t netlab.T, client kubernetes.Interface, namespace, svc string, family discoveryv1.AddressType, eps ...Endpoint) {
	t.Helper()
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: svc + "-lab-" + strings.ToLower(string(family)),
			Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "herald-e2e"}},
		AddressType: family,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To[int32](EchoPort)},
			{Name: ptr.To("udp"), Protocol: ptr.To(v1.ProtocolUDP), Port: ptr.To[int32](EchoPort)},
		},
		Endpoints: []discoveryv1.Endpoint{},
	}
	for _, ep := range eps {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ep.IP.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			NodeName:   ptr.To(ep.Node),
		})
	}
	WriteSlice(t, client, slice)
}

// WriteSlice creates the EndpointSlice, or replaces the one of that name.
func WriteSlice(t netlab.T, client kubernetes.Interface, slice *discoveryv1.EndpointSlice) {
	t.Helper()
	ctx := context.Background()
	slices := client.DiscoveryV1().EndpointSlices(slice.Namespace)
	old, err := slices.Get(ctx, slice.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = slices.Create(ctx, slice, metav1.CreateOptions{})
	case err == nil:
		slice.ResourceVersion = old.ResourceVersion
		_, err = slices.Update(ctx, slice, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// StartCCM runs herald-ccm against c with cloudConfig (written to dir) and
// the flags the lab uses, plus extra ones; it stops when t ends.
func StartCCM(t netlab.T, c *cluster.Cluster, bin Binaries, dir, cloudConfig string, extra ...string) *cluster.Process {
	t.Helper()
	configPath := filepath.Join(dir, "cloud-config.yaml")
	if err := os.WriteFile(configPath, []byte(cloudConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := cluster.StartProcess("herald-ccm", filepath.Join(dir, "herald-ccm.log"), bin.CCM,
		append([]string{"--kubeconfig=" + c.Kubeconfig,
			"--cloud-provider=herald",
			"--cloud-config=" + configPath,
			"--cluster-name=herald-e2e",
			"--leader-elect=false",
			"--controllers=service-lb-controller,herald-class-controller",
			"--secure-port=0",
			"--v=2",
		}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	p.StopAtCleanup(t, 60)
	return p
}

// Kubectl runs the cluster's kubectl (the built 1.37 one) and returns its
// output.
func Kubectl(t netlab.T, c *cluster.Cluster, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(c.BinDir, "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// InstallCRDs applies herald's CRDs from crdDir as an admin would and waits
// until the apiserver serves them.
func InstallCRDs(t netlab.T, c *cluster.Cluster, crdDir string) {
	t.Helper()
	Kubectl(t, c, "apply", "--server-side", "-f", crdDir)
	Kubectl(t, c, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/ipaddresspools.herald.dev", "crd/l2advertisements.herald.dev", "crd/bgppeers.herald.dev", "crd/bgpadvertisements.herald.dev")
}
