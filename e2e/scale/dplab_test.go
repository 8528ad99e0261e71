package scale

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
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
	"github.com/heraldlb/herald/e2e/labkit"
	"github.com/heraldlb/herald/e2e/netlab"
)

// The data plane lab: a real apiserver holding n single-stack IPv6
// ClusterIP Services with three endpoints each, and one network namespace
// per proxy under test, each registered as a Node. The proxies program
// their kernel rules from the Services; no packet needs to flow, so the
// endpoints are addresses nobody holds, on a node that does not exist.
const (
	dpNamespace = "dp"
	// dpRemoteNode hosts every endpoint: no proxy treats one as local.
	dpRemoteNode = "elsewhere"
	dpTargetPort = 8080
	// dpClusterCIDRs are the pod ranges the proxies are told about (both
	// families, as kube-proxy in dual-stack mode wants).
	dpClusterCIDRs = "198.51.100.0/24,2001:db8:e::/48"
)

type dpLab struct {
	c      *cluster.Cluster
	client kubernetes.Interface
	lab    *netlab.Lab
	dir    string
	apiAdr string
	nodes  map[string]*netlab.Node
}

// newDPLab starts the apiserver, creates services Services (with
// -scale.workers creators) and one node namespace per name in nodes.
func newDPLab(t testing.TB, services int, nodes ...string) *dpLab {
	t.Helper()
	netlab.SkipUnlessAble(t)
	c := cluster.StartForTest(t, cluster.Options{ServiceCIDRs: serviceCIDR})
	l := &dpLab{c: c, client: fastClient(t, c.Config), lab: netlab.New(t), dir: t.TempDir(),
		apiAdr: strings.TrimPrefix(c.Config.Host, "https://"), nodes: map[string]*netlab.Node{}}
	for i, name := range nodes {
		n := l.lab.AddNode(name, netip.AddrFrom4([4]byte{192, 0, 2, byte(11 + i)}))
		l.lab.AddIPv6(&n.Host, netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", 0x11+i)), true)
		labkit.RegisterNode(t, l.client, n)
		l.lab.Forward(n.Netns, l.apiAdr)
		l.nodes[name] = n
	}
	createNamespace(t, l.client, dpNamespace)
	began := time.Now()
	parallel(t, services, func(ctx context.Context, i int) error {
		if _, err := l.client.CoreV1().Services(dpNamespace).Create(ctx, dpService(i), metav1.CreateOptions{}); err != nil {
			return err
		}
		_, err := l.client.DiscoveryV1().EndpointSlices(dpNamespace).Create(ctx, dpSlice(i, 3), metav1.CreateOptions{})
		return err
	})
	t.Logf("%d Services with 3 endpoints each created in %v", services, time.Since(began).Round(time.Second))
	return l
}

func dpServiceName(i int) string { return fmt.Sprintf("svc-%05d", i) }

func dpService(i int) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: dpNamespace, Name: dpServiceName(i)},
		Spec: v1.ServiceSpec{
			Type:           v1.ServiceTypeClusterIP,
			IPFamilies:     []v1.IPFamily{v1.IPv6Protocol},
			IPFamilyPolicy: ptr.To(v1.IPFamilyPolicySingleStack),
			Selector:       map[string]string{"app": dpServiceName(i)},
			Ports:          []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80}},
		},
	}
}

// dpEndpoint is endpoint j (from 1) of Service i.
func dpEndpoint(i, j int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("2001:db8:e:%x::%x", i, j))
}

// dpSlice is Service i's EndpointSlice with n ready endpoints, stamped with
// the trigger time the EndpointSlice controller writes.
func dpSlice(i, n int) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: dpNamespace, Name: dpServiceName(i) + "-bench",
			Labels:      map[string]string{discoveryv1.LabelServiceName: dpServiceName(i), discoveryv1.LabelManagedBy: "herald-bench"},
			Annotations: map[string]string{v1.EndpointsLastChangeTriggerTime: time.Now().UTC().Format(time.RFC3339Nano)}},
		AddressType: discoveryv1.AddressTypeIPv6,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To[int32](dpTargetPort)}},
	}
	for j := 1; j <= n; j++ {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{dpEndpoint(i, j).String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			NodeName:   ptr.To(dpRemoteNode),
		})
	}
	return s
}

// endpointUpdate returns a function that rewrites Service i's slice with n
// endpoints. The current version is read first, so that the returned call,
// the one a benchmark times, is the update alone, as the EndpointSlice
// controller sends it.
func (l *dpLab) endpointUpdate(ctx context.Context, i, n int) (func() error, error) {
	slices := l.client.DiscoveryV1().EndpointSlices(dpNamespace)
	cur, err := slices.Get(ctx, dpServiceName(i)+"-bench", metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	next := dpSlice(i, n)
	next.ResourceVersion = cur.ResourceVersion
	return func() error {
		// The trigger time is the controller's: when the change was made.
		next.Annotations[v1.EndpointsLastChangeTriggerTime] = time.Now().UTC().Format(time.RFC3339Nano)
		_, err := slices.Update(ctx, next, metav1.UpdateOptions{})
		return err
	}, nil
}

// proxy is a data plane under test running in its node namespace.
type proxy struct {
	name    string // "herald-agent" or "kube-proxy"
	node    *netlab.Node
	binary  string
	args    []string
	env     []string
	proc    *cluster.Process
	started time.Time
	lab     *dpLab
}

func (p *proxy) start(t testing.TB) {
	t.Helper()
	bin, args := p.binary, p.args
	if len(p.env) > 0 {
		// env(1) execs the proxy: the PID stays the proxy's own.
		bin, args = "/usr/bin/env", append(append(append([]string{}, p.env...), p.binary), p.args...)
	}
	p.started = time.Now()
	proc, err := p.node.Start(p.name, filepath.Join(p.lab.dir, fmt.Sprintf("%s-%d.log", p.name, p.started.UnixNano())), bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	p.proc = proc
	p.lab.lab.OnCleanup(func() {
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", p.name, proc.LogTail(30))
		}
		proc.Stop(10 * time.Second)
	})
}

// synced reports whether the proxy's first full sync is in the kernel.
func (p *proxy) synced() (bool, error) {
	if err := p.proc.ExitedErr(); err != nil {
		return false, err
	}
	client := labkit.HTTPClient(p.node.Netns, 2*time.Second)
	if p.name == "herald-agent" {
		resp, err := client.Get("http://127.0.0.1:" + strconv.Itoa(labkit.AgentHealthPort) + "/readyz")
		if err != nil {
			return false, nil //nolint:nilerr // not listening yet
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	}
	// kube-proxy runs one proxier per family; the IPv6 one holds the
	// Services. Its first sync waits for the informers, as herald's does.
	v, err := metricValue(client, "http://127.0.0.1:10249/metrics",
		`kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv6"}`)
	if err != nil {
		return false, nil //nolint:nilerr // not listening yet
	}
	return v >= 1, nil
}

// waitSynced polls until the proxy's first full sync is done and returns
// how long it took from the process start, and the CPU it used by then.
func (p *proxy) waitSynced(t testing.TB, timeout time.Duration) (time.Duration, float64) {
	t.Helper()
	var took time.Duration
	var cpu float64
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, timeout, true,
		func(context.Context) (bool, error) {
			ok, err := p.synced()
			if ok {
				took = time.Since(p.started)
				cpu, _ = cpuSeconds(p.proc.PID())
			}
			return ok, err
		})
	if err != nil {
		t.Fatalf("%s: first sync not done within %v: %v", p.name, timeout, err)
	}
	return took, cpu
}

func metricValue(client *http.Client, url, series string) (float64, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, nil
}

// deleteTables removes what a proxy left in its namespace, so that the next
// start is a first start, not a restart.
func (p *proxy) deleteTables(t testing.TB) {
	t.Helper()
	if _, err := p.node.Run("nft", "flush", "ruleset"); err != nil {
		t.Fatal(err)
	}
}

func (l *dpLab) heraldAgent(bin, node string, extra ...string) *proxy {
	return &proxy{name: "herald-agent", node: l.nodes[node], binary: bin, lab: l, args: append([]string{
		"--kubeconfig=" + l.c.Kubeconfig, "--node-name=" + node, "--cluster-cidr=" + dpClusterCIDRs,
	}, extra...)}
}

// kubeProxy runs kube-proxy in nftables mode. The conntrack flags keep it
// from writing the host-wide conntrack sysctls, which a namespace shares.
func (l *dpLab) kubeProxy(bin, node string, extra ...string) *proxy {
	return &proxy{name: "kube-proxy", node: l.nodes[node], binary: bin, lab: l, args: append([]string{
		"--kubeconfig=" + l.c.Kubeconfig, "--hostname-override=" + node, "--proxy-mode=nftables",
		"--cluster-cidr=" + dpClusterCIDRs, "--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0", "--v=2",
	}, extra...)}
}

// fileExists is for flags naming binaries built elsewhere.
func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}
