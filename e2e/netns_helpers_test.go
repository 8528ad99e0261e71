package e2e

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/e2e/labkit"
	"github.com/heraldlb/herald/e2e/netlab"
)

// The network tier's addresses (documentation ranges only).
var (
	clientIP  = netip.MustParseAddr("192.0.2.100")
	clientIP6 = netip.MustParseAddr("2001:db8::100")
	vip       = netip.MustParseAddr("198.51.100.200")
	podCIDR   = netip.MustParsePrefix("198.51.100.0/24")
	// podCIDR6 are n1's and n2's IPv6 pod ranges.
	podCIDR6 = [2]netip.Prefix{netip.MustParsePrefix("2001:db8:1::/64"), netip.MustParsePrefix("2001:db8:2::/64")}
)

const (
	echoPort = labkit.EchoPort
	// syncPeriod for the agents: the tests measure "within one sync" against
	// minSyncPeriod, so it is short.
	minSyncPeriod    = 100 * time.Millisecond
	agentHealthPort  = labkit.AgentHealthPort
	agentMetricsAddr = labkit.AgentMetricsAddr
	attempt          = labkit.Attempt
	// refusedWithin is how fast "connection refused" has to arrive: a reset
	// from the node takes a millisecond; a lost SYN is retransmitted only
	// after a second. The margin is for a loaded 2-core CI machine.
	refusedWithin = 500 * time.Millisecond
)

// netEnv is the lab: a real apiserver, nodes running herald-agent and pods
// running the echo server.
type netEnv struct {
	// t is the test that made the lab; it outlives subtests, so the lab's
	// cleanups log through it.
	t      testing.TB
	c      *cluster.Cluster
	client kubernetes.Interface
	lab    *netlab.Lab
	// apiAddr is the apiserver's host:port, relayed into every node.
	apiAddr string
	nodes   map[string]*netlab.Node
	pods    map[string]*netlab.Host
	podNode map[string]string
	agents  map[string]*cluster.Process
	dir     string
}

// answer is what the echo server said (labkit's, under a short name the
// tests use everywhere).
type answer = labkit.Answer

// get asks the echo server behind addr from inside ns.
func get(ns *netlab.Netns, addr string) (answer, error) { return labkit.Get(ns, addr, attempt) }

// httpClient sends requests from inside ns, one connection per request.
func httpClient(ns *netlab.Netns) *http.Client { return labkit.HTTPClient(ns, attempt) }

// getStatus returns only the HTTP status of a GET, for health checks.
func getStatus(ns *netlab.Netns, rawURL string) (int, error) {
	if _, err := url.Parse(rawURL); err != nil {
		return 0, err
	}
	resp, err := httpClient(ns).Get(rawURL)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// askUDP sends one datagram from inside ns and waits for the echo.
func askUDP(ns *netlab.Netns, addr string) (answer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), attempt)
	defer cancel()
	conn, err := ns.DialContext(ctx, "udp", addr)
	if err != nil {
		return answer{}, err
	}
	defer conn.Close()
	return askOn(conn)
}

// askOn sends one datagram on a connected UDP socket and waits for the echo.
func askOn(conn net.Conn) (answer, error) {
	if err := conn.SetDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
		return answer{}, err
	}
	if _, err := conn.Write([]byte("ping")); err != nil {
		return answer{}, err
	}
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if err != nil {
		return answer{}, err
	}
	return labkit.ParseAnswer(string(buf[:n]))
}

// eventually polls ask until it answers, and returns the answer.
func eventually(t testing.TB, what string, ask func() (answer, error), ok func(answer) bool) answer {
	t.Helper()
	var last answer
	var lastErr error
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, waitTimeout, true,
		func(context.Context) (bool, error) {
			last, lastErr = ask()
			return lastErr == nil && ok(last), nil
		})
	if err != nil {
		t.Fatalf("%s: not within %v; last answer %+v, error %v", what, waitTimeout, last, lastErr)
	}
	return last
}

func anyAnswer(answer) bool { return true }

// keepConn is one TCP connection that sends several HTTP requests, to prove
// that an established connection survives something.
type keepConn struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialKeep(ns *netlab.Netns, addr string) (*keepConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), attempt)
	defer cancel()
	conn, err := ns.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &keepConn{conn: conn, r: bufio.NewReader(conn)}, nil
}

func (k *keepConn) get() (answer, error) {
	if err := k.conn.SetDeadline(time.Now().Add(attempt)); err != nil {
		return answer{}, err
	}
	if _, err := io.WriteString(k.conn, "GET / HTTP/1.1\r\nHost: echo\r\n\r\n"); err != nil {
		return answer{}, err
	}
	resp, err := http.ReadResponse(k.r, nil) //nolint:bodyclose // labkit.ReadAnswer closes it
	if err != nil {
		return answer{}, err
	}
	return labkit.ReadAnswer(resp)
}

// startEcho runs the echo server in pod's namespace until the lab goes.
func (e *netEnv) startEcho(t testing.TB, pod *netlab.Host) {
	t.Helper()
	labkit.StartEcho(t, e.lab, labBinaries(t), e.dir, pod)
}

// startAgent runs herald-agent in the node's namespace against the relayed
// apiserver, with extra flags after the lab's. It returns the process; the
// lab stops it at the end.
func (e *netEnv) startAgent(t testing.TB, node string, extra ...string) *cluster.Process {
	t.Helper()
	args := append([]string{
		"--kubeconfig=" + e.c.Kubeconfig,
		"--node-name=" + node,
		"--cluster-cidr=" + podCIDR.String() + "," + podCIDR6[0].String() + "," + podCIDR6[1].String(),
		"--min-sync-period=" + minSyncPeriod.String(),
		"--burst=2",
		"--v=2",
	}, extra...)
	p := labkit.StartAgent(t, e.lab, labBinaries(t), e.dir, e.nodes[node], args...)
	e.agents[node] = p
	return p
}

// restartAgent replaces node's herald-agent with one started with extra
// flags after the lab's, and waits until it is ready.
func (e *netEnv) restartAgent(t testing.TB, node string, extra ...string) {
	t.Helper()
	e.agents[node].Stop(10 * time.Second)
	e.startAgent(t, node, extra...)
	e.waitAgentReady(t, node)
}

// waitAgentReady polls the agent's /readyz inside its node: ready means its
// first full sync is in the kernel.
func (e *netEnv) waitAgentReady(t testing.TB, node string) {
	t.Helper()
	labkit.WaitAgentReady(t, e.nodes[node], e.agents[node])
}

// createNode registers a lab node with its LAN address as InternalIP.
func (e *netEnv) createNode(t testing.TB, n *netlab.Node) {
	t.Helper()
	labkit.RegisterNode(t, e.client, n)
}

// echoService is a Service with one TCP and one UDP port, both named, both
// forwarding to the echo port.
func echoService(name string, typ v1.ServiceType) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: v1.ServiceSpec{
			Type: typ,
			Ports: []v1.ServicePort{
				{Name: "http", Protocol: v1.ProtocolTCP, Port: 80},
				{Name: "udp", Protocol: v1.ProtocolUDP, Port: 80},
			},
		},
	}
}

// setEndpoints writes the Service's one EndpointSlice with the given pods,
// ready, each on its node; no pods means an empty slice.
func (e *netEnv) setEndpoints(t testing.TB, svc string, pods ...string) {
	t.Helper()
	e.setEndpointsFamily(t, svc, discoveryv1.AddressTypeIPv4, pods...)
}

// setEndpointsFamily writes the Service's EndpointSlice of one address
// family with the given pods, ready, each on its node.
func (e *netEnv) setEndpointsFamily(t testing.TB, svc string, family discoveryv1.AddressType, pods ...string) {
	t.Helper()
	var eps []labkit.Endpoint
	for _, p := range pods {
		ip := e.pods[p].IP
		if family == discoveryv1.AddressTypeIPv6 {
			ip = e.pods[p].IP6
		}
		eps = append(eps, labkit.Endpoint{IP: ip, Node: e.podNode[p]})
	}
	labkit.SetEndpoints(t, e.client, "default", svc, family, eps...)
}

// portOf returns the Service's port (or node port) by port name.
func portOf(svc *v1.Service, name string, nodePort bool) int32 {
	for _, p := range svc.Spec.Ports {
		if p.Name == name {
			if nodePort {
				return p.NodePort
			}
			return p.Port
		}
	}
	return 0
}

func hostPort(ip string, port int32) string {
	return net.JoinHostPort(ip, strconv.Itoa(int(port)))
}

// podsOf sends n fresh requests and returns how often each pod answered,
// failing on any error or on an answer from a pod outside allowed.
func podsOf(t testing.TB, n int, ask func() (answer, error), check func(answer) error) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range n {
		a, err := ask()
		if err != nil {
			t.Fatalf("request failed: %v (answers so far %v)", err, seen)
		}
		if check != nil {
			if err := check(a); err != nil {
				t.Fatal(err)
			}
		}
		seen[a.Pod]++
	}
	return seen
}

// syncCount reads from the agent in ns how many syncs of a mode ("full",
// "reload", "partial") succeeded.
func syncCount(t testing.TB, ns *netlab.Netns, mode string) float64 {
	t.Helper()
	return agentMetric(t, ns, `herald_dataplane_sync_duration_seconds_count{mode="`+mode+`"}`)
}

// agentMetric reads one series (name and labels as /metrics prints them)
// from the agent in ns; 0 if it is absent.
func agentMetric(t testing.TB, ns *netlab.Netns, series string) float64 {
	t.Helper()
	resp, err := httpClient(ns).Get("http://" + agentMetricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("agent metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("agent metrics: %v", err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("agent metrics: %q: %v", line, err)
			}
			return n
		}
	}
	return 0
}
