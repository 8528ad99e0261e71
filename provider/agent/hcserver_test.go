package agent

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/internal/testenv"
	"github.com/heraldlb/herald/provider/dataplane"
)

var webName = types.NamespacedName{Namespace: "ns", Name: "web"}

func testMetrics(t *testing.T) *metrics {
	t.Helper()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type probe struct {
	code   int
	header http.Header
	body   string
}

func get(t *testing.T, c *http.Client, url string) probe {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return probe{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

func TestHealthCheckServerAnswers(t *testing.T) {
	ctx := context.Background()
	mem := newMemNet()
	var healthy atomic.Bool
	healthy.Store(true)
	hcs := newHealthCheckServers(mem.listen, healthy.Load, testMetrics(t))
	defer hcs.closeAll()

	for _, tc := range []struct {
		name      string
		endpoints int
		healthy   bool
		code      int
		body      string
	}{{
		name: "local endpoints", endpoints: 2, healthy: true, code: http.StatusOK,
		body: "{\n\t\"service\": {\n\t\t\"namespace\": \"ns\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}",
	}, {
		name: "no local endpoint", endpoints: 0, healthy: true, code: http.StatusServiceUnavailable,
		body: "{\n\t\"service\": {\n\t\t\"namespace\": \"ns\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": 0,\n\t\"serviceProxyHealthy\": true\n}",
	}, {
		name: "endpoints but the dataplane is stuck", endpoints: 3, healthy: false, code: http.StatusServiceUnavailable,
		body: "{\n\t\"service\": {\n\t\t\"namespace\": \"ns\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": 3,\n\t\"serviceProxyHealthy\": false\n}",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			healthy.Store(tc.healthy)
			want := map[types.NamespacedName]dataplane.HealthCheck{webName: {Port: 32000, LocalEndpoints: tc.endpoints}}
			if err := hcs.sync(ctx, want, []string{""}); err != nil {
				t.Fatal(err)
			}
			p := get(t, mem.client(), "http://:32000/healthz")
			if p.code != tc.code || p.body != tc.body {
				t.Errorf("got %d %q\nwant %d %q", p.code, p.body, tc.code, tc.body)
			}
			for k, v := range map[string]string{"Content-Type": "application/json", "X-Content-Type-Options": "nosniff"} {
				if got := p.header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestHealthCheckServersFollowServices(t *testing.T) {
	ctx := context.Background()
	mem := newMemNet()
	m := testMetrics(t)
	hcs := newHealthCheckServers(mem.listen, func() bool { return true }, m)
	defer hcs.closeAll()
	hosts := []string{"192.0.2.10", "2001:db8::10"}
	api := types.NamespacedName{Namespace: "ns", Name: "api"}

	want := map[types.NamespacedName]dataplane.HealthCheck{webName: {Port: 32000, LocalEndpoints: 1}, api: {Port: 32001}}
	if err := hcs.sync(ctx, want, hosts); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"192.0.2.10:32000", "[2001:db8::10]:32000", "192.0.2.10:32001", "[2001:db8::10]:32001"} {
		if !mem.open(a) {
			t.Errorf("%s not listening", a)
		}
	}
	if got := testutil.ToFloat64(m.hcServers); got != 2 {
		t.Errorf("herald_healthcheck_servers = %v, want 2", got)
	}

	// api goes away and web moves to another port.
	want = map[types.NamespacedName]dataplane.HealthCheck{webName: {Port: 32002, LocalEndpoints: 1}}
	if err := hcs.sync(ctx, want, hosts); err != nil {
		t.Fatal(err)
	}
	for a, open := range map[string]bool{"192.0.2.10:32000": false, "192.0.2.10:32001": false, "192.0.2.10:32002": true} {
		if mem.open(a) != open {
			t.Errorf("%s open = %t, want %t", a, !open, open)
		}
	}

	// A port someone else holds fails alone and is retried at the next sync.
	mem.setBusy("192.0.2.10:32003", true)
	want[api] = dataplane.HealthCheck{Port: 32003, LocalEndpoints: 1}
	if err := hcs.sync(ctx, want, hosts); err == nil {
		t.Fatal("want an error for the busy port")
	}
	if mem.open("[2001:db8::10]:32003") {
		t.Error("a half-opened service must close what it opened")
	}
	if got := testutil.ToFloat64(m.hcErrors); got != 1 {
		t.Errorf("herald_healthcheck_listen_errors_total = %v, want 1", got)
	}
	mem.setBusy("192.0.2.10:32003", false)
	if err := hcs.sync(ctx, want, hosts); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if !mem.open("192.0.2.10:32003") {
		t.Error("retry did not open the port")
	}
}

// TestHealthCheckServerOnLoopback uses a real listener, as a cloud load
// balancer's probe would reach it.
func TestHealthCheckServerOnLoopback(t *testing.T) {
	addrs := make(chan net.Addr, 1)
	listen := func(network, addr string) (net.Listener, error) {
		l, err := net.Listen(network, addr)
		if err == nil {
			addrs <- l.Addr()
		}
		return l, err
	}
	// The machine first: only a loopback that cannot listen at all makes
	// this test unable to run. After that, a sync error is the code's.
	if l, err := net.Listen("tcp", "127.0.0.1:0"); err != nil {
		testenv.Unavailable(t, "cannot listen on 127.0.0.1: %v", err)
	} else {
		l.Close()
	}
	hcs := newHealthCheckServers(listen, func() bool { return true }, testMetrics(t))
	defer hcs.closeAll()
	// Port 0 lets the kernel pick a free port, which the listen hook reports.
	want := map[types.NamespacedName]dataplane.HealthCheck{webName: {Port: 0, LocalEndpoints: 1}}
	if err := hcs.sync(context.Background(), want, []string{"127.0.0.1"}); err != nil {
		t.Fatalf("health check server on 127.0.0.1: %v", err)
	}
	addr := recv(t, addrs, "listener address")
	p := get(t, &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}, "http://"+addr.String()+"/")
	if p.code != http.StatusOK || p.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("got %d %v", p.code, p.header)
	}
	hcs.closeAll()
	if c, err := net.Dial("tcp", addr.String()); err == nil {
		c.Close()
		t.Error("listener still open after closeAll")
	}
}
