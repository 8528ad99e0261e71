package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2/ktesting"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/internal/kubeclient/kubeclienttest"
	"github.com/heraldlb/herald/provider/dataplane"
)

const nodeName = "node-a"

func testNode() *v1.Node {
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: nodeName},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{
			{Type: v1.NodeInternalIP, Address: "192.0.2.10"},
			{Type: v1.NodeHostName, Address: nodeName},
		}},
	}
}

func webService() *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
		Spec: v1.ServiceSpec{
			Type: v1.ServiceTypeLoadBalancer, ClusterIP: "198.51.100.1", ClusterIPs: []string{"198.51.100.1"},
			Ports:                 []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, NodePort: 30080}},
			ExternalTrafficPolicy: v1.ServiceExternalTrafficPolicyLocal, HealthCheckNodePort: 32000,
		},
		Status: v1.ServiceStatus{LoadBalancer: v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{{IP: "203.0.113.1"}}}},
	}
}

// webSlice has one ready endpoint per address, on the given nodes.
func webSlice(addrNode ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To[int32](8080)}},
	}
	for i := 0; i+1 < len(addrNode); i += 2 {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{addrNode[i]}, NodeName: ptr.To(addrNode[i+1]),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		})
	}
	return s
}

// flakyNFT fails transactions on demand, as a broken nft would.
type flakyNFT struct {
	knftables.Interface
	fail atomic.Bool
}

var errInjected = errors.New("injected nft failure")

func (f *flakyNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	if f.fail.Load() {
		return errInjected
	}
	return f.Interface.Run(ctx, tx)
}

type harness struct {
	agent  *Agent
	client *fake.Clientset
	nft    *knftables.Fake
	flaky  *flakyNFT
	clock  *testingclock.FakeClock
	mem    *memNet
	reg    *prometheus.Registry
	ct     *fakeConntrack
	// reports carries every sync attempt with the table dumped right after
	// it, from the sync goroutine (the fake is not read concurrently).
	reports chan report
}

type report struct {
	syncReport
	dump string
}

func newHarness(t *testing.T, objs ...runtime.Object) *harness {
	t.Helper()
	return newHarnessWith(t, nil, objs...)
}

// newHarnessWith lets mod change the Config and Deps before New.
func newHarnessWith(t *testing.T, mod func(*Config, *Deps), objs ...runtime.Object) *harness {
	t.Helper()
	h := &harness{
		client:  fake.NewClientset(objs...),
		nft:     knftables.NewFake(dataplane.TableFamily, dataplane.TableName),
		clock:   testingclock.NewFakeClock(t0),
		mem:     newMemNet(),
		reg:     prometheus.NewRegistry(),
		reports: make(chan report, 64),
		ct:      &fakeConntrack{},
	}
	h.flaky = &flakyNFT{Interface: h.nft}
	cfg := Config{NodeName: nodeName, MinSyncPeriod: time.Second, SyncPeriod: 30 * time.Second, Burst: 100}
	deps := Deps{Source: kubeclienttest.Clientset{Interface: h.client}, NFT: h.flaky, Registerer: h.reg, Clock: h.clock, Listen: h.mem.listen, Conntrack: h.ct}
	if mod != nil {
		mod(&cfg, &deps)
	}
	a, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	a.onSync = func(r syncReport) { h.reports <- report{syncReport: r, dump: h.nft.Dump()} }
	h.agent = a
	return h
}

// run starts the whole agent, as herald-agent does.
func (h *harness) run(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.agent.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := recv(t, done, "agent exit"); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func (h *harness) probe(path string) int {
	rec := httptest.NewRecorder()
	h.agent.HealthHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code
}

// waitFor returns the first sync report whose dump has every line of want.
func (h *harness) waitFor(t *testing.T, want ...string) report {
	t.Helper()
	for {
		r := recv(t, h.reports, "a sync containing "+strings.Join(want, ", "))
		if r.err == nil && containsAll(r.dump, want) {
			return r
		}
	}
}

func containsAll(s string, lines []string) bool {
	for _, l := range lines {
		if !strings.Contains(s, l) {
			return false
		}
	}
	return true
}

const (
	ep1 = "add element inet herald ep4 { 198.51.100.1 . tcp . 80 . 0 : 192.0.2.101 . 8080 }"
	ep2 = "add element inet herald ep4 { 198.51.100.1 . tcp . 80 . 1 : 192.0.2.102 . 8080 }"
)

func TestAgentSyncsServiceAndEndpointChanges(t *testing.T) {
	h := newHarness(t, testNode(), webService(), webSlice("192.0.2.101", "node-b"))
	if code := h.probe("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before any sync: %d", code)
	}
	h.run(t)
	first := h.waitFor(t, ep1)
	if !first.result.Full {
		t.Errorf("first sync must be full")
	}
	if code := h.probe("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after the first full sync: %d", code)
	}
	// The endpoint is on another node: the health check says so.
	p := get(t, h.mem.client(), "http://:32000/healthz")
	if p.code != http.StatusServiceUnavailable || !strings.Contains(p.body, `"localEndpoints": 0`) {
		t.Errorf("health check before a local endpoint: %d %s", p.code, p.body)
	}

	// A second, local endpoint comes: a partial sync adds it.
	_, err := h.client.DiscoveryV1().EndpointSlices("ns").Update(context.Background(),
		webSlice("192.0.2.101", "node-b", "192.0.2.102", nodeName), metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := h.waitFor(t, ep1, ep2)
	if r.result.Full {
		t.Errorf("an endpoint change must be a partial sync")
	}
	p = get(t, h.mem.client(), "http://:32000/healthz")
	if p.code != http.StatusOK || !strings.Contains(p.body, `"localEndpoints": 1`) {
		t.Errorf("health check with a local endpoint: %d %s", p.code, p.body)
	}
	if got := testutil.ToFloat64(h.agent.metrics.elements); got == 0 {
		t.Error("herald_dataplane_elements not set")
	}

	// A new Service and its slice: its frontend and endpoint appear, and
	// since it has no healthCheckNodePort, no server opens for it.
	api := webService()
	api.Name, api.Spec.ClusterIP, api.Spec.ClusterIPs = "api", "198.51.100.2", []string{"198.51.100.2"}
	api.Spec.Type, api.Spec.ExternalTrafficPolicy, api.Spec.HealthCheckNodePort = v1.ServiceTypeClusterIP, "", 0
	api.Spec.Ports[0].NodePort, api.Status = 0, v1.ServiceStatus{}
	apiSlice := webSlice("192.0.2.103", "node-b")
	apiSlice.Name, apiSlice.Labels[discoveryv1.LabelServiceName] = "api-1", "api"
	ctx := context.Background()
	if _, err := h.client.CoreV1().Services("ns").Create(ctx, api, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.DiscoveryV1().EndpointSlices("ns").Create(ctx, apiSlice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitFor(t, `add element inet herald svc4-1 { 198.51.100.2 . tcp . 80 comment "ns/api:http" }`,
		"add element inet herald ep4 { 198.51.100.2 . tcp . 80 . 0 : 192.0.2.103 . 8080 }")
	if got := testutil.ToFloat64(h.agent.metrics.hcServers); got != 1 {
		t.Errorf("herald_healthcheck_servers = %v, want 1", got)
	}
}

// startInformers runs the informers without the sync loop, so a test can call
// sync itself; it returns once the handlers have seen the initial objects.
func (h *harness) startInformers(t testing.TB) context.Context {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(func() {
		cancel()
		h.agent.factory.Shutdown()
		h.agent.nodeInf.Shutdown()
	})
	h.agent.factory.Start(ctx.Done())
	h.agent.nodeInf.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), h.agent.synced...) {
		t.Fatal("caches did not sync")
	}
	h.drainTrigger()
	return ctx
}

func (h *harness) drainTrigger() {
	select {
	case <-h.agent.runner.trigger:
	default:
	}
}

// updateSlice writes s and returns once the agent's handler has seen it.
func (h *harness) updateSlice(t testing.TB, s *discoveryv1.EndpointSlice) {
	t.Helper()
	h.drainTrigger()
	if _, err := h.client.DiscoveryV1().EndpointSlices("ns").Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	recv(t, h.agent.runner.trigger, "the update event")
}

// syncNow runs one sync on the test goroutine and returns its report.
func (h *harness) syncNow(t *testing.T, ctx context.Context) (report, error) {
	t.Helper()
	err := h.agent.sync(ctx)
	return recv(t, h.reports, "sync report"), err
}

func observations(t *testing.T, m *metrics, mode string) uint64 {
	t.Helper()
	var out dto.Metric
	if err := m.syncDuration.WithLabelValues(mode).(prometheus.Histogram).Write(&out); err != nil {
		t.Fatal(err)
	}
	return out.GetHistogram().GetSampleCount()
}

func TestAgentFullSyncAfterFailureAndPeriodically(t *testing.T) {
	h := newHarness(t, testNode(), webService(), webSlice("192.0.2.101", "node-b"))
	ctx := h.startInformers(t)
	m := h.agent.metrics
	step := func(name string, wantFull bool, wantErr bool, wantLines ...string) {
		t.Helper()
		r, err := h.syncNow(t, ctx)
		if (err != nil) != wantErr || r.result.Full != wantFull {
			t.Fatalf("%s: full=%t err=%v, want full=%t err=%t", name, r.result.Full, err, wantFull, wantErr)
		}
		if err != nil && (!errors.Is(err, errInjected) || !errors.Is(err, dataplane.ErrApply)) {
			t.Fatalf("%s: error does not wrap the cause: %v", name, err)
		}
		if !containsAll(r.dump, wantLines) {
			t.Fatalf("%s: dump lacks %q:\n%s", name, wantLines, r.dump)
		}
	}

	step("first", true, false, ep1)
	step("nothing changed", false, false, ep1)

	h.updateSlice(t, webSlice("192.0.2.101", "node-b", "192.0.2.102", nodeName))
	h.flaky.fail.Store(true)
	step("partial sync fails", false, true)
	if got := testutil.ToFloat64(m.syncErrors); got != 1 {
		t.Errorf("herald_dataplane_sync_errors_total = %v, want 1", got)
	}
	h.flaky.fail.Store(false)
	step("after a failure", true, false, ep1, ep2)

	h.updateSlice(t, webSlice("192.0.2.101", "node-b"))
	h.clock.Step(DefaultFullSyncPeriod)
	step("full sync period elapsed", true, false, ep1)
	if r := h.nft.Dump(); strings.Contains(r, "192.0.2.102") {
		t.Errorf("removed endpoint still in the table:\n%s", r)
	}
	if full, partial := observations(t, m, "full"), observations(t, m, "partial"); full != 3 || partial != 2 {
		t.Errorf("sync duration observations: full %d partial %d, want 3 and 2", full, partial)
	}
	if got := testutil.ToFloat64(m.lastSuccess); got != float64(t0.Add(DefaultFullSyncPeriod).Unix()) {
		t.Errorf("last success timestamp %v", got)
	}
}

func TestNewRejectsMissingNodeName(t *testing.T) {
	_, err := New(Config{SyncPeriod: time.Second, Burst: 1}, Deps{Source: kubeclienttest.Clientset{Interface: fake.NewClientset()},
		NFT: knftables.NewFake(dataplane.TableFamily, dataplane.TableName), Registerer: prometheus.NewRegistry()})
	if err == nil {
		t.Fatal("want an error without a node name")
	}
}
