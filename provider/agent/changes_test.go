package agent

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/provider/dataplane"
)

// namedService is webService under another name and ClusterIP, without
// NodePort or health check.
func namedService(name, ip string) *v1.Service {
	s := webService()
	s.Name, s.Spec.ClusterIP, s.Spec.ClusterIPs = name, ip, []string{ip}
	s.Spec.Type, s.Spec.ExternalTrafficPolicy, s.Spec.HealthCheckNodePort = v1.ServiceTypeClusterIP, "", 0
	s.Spec.Ports[0].NodePort, s.Status = 0, v1.ServiceStatus{}
	return s
}

func namedSlice(name, service string, addrNode ...string) *discoveryv1.EndpointSlice {
	s := webSlice(addrNode...)
	s.Name, s.Labels[discoveryv1.LabelServiceName] = name, service
	return s
}

// TestAgentPartialSyncsFollowEveryKindOfChange: after the first sync the
// agent rebuilds only the Services its informers name. Each kind of event
// must name the right ones, so after each the table must be what a full
// build of every object gives, through a partial sync.
func TestAgentPartialSyncsFollowEveryKindOfChange(t *testing.T) {
	h := newHarness(t, testNode(), webService(), webSlice("192.0.2.101", "node-b"),
		namedService("api", "198.51.100.2"), namedSlice("api-1", "api", "192.0.2.103", "node-b"),
		namedService("db", "198.51.100.3"))
	ctx := h.startInformers(t)
	if _, err := h.syncNow(t, ctx); err != nil {
		t.Fatal(err)
	}
	svcs, eps := h.client.CoreV1().Services("ns"), h.client.DiscoveryV1().EndpointSlices("ns")
	steps := []struct {
		name   string
		change func() error
	}{
		{"endpoint added", func() error {
			_, err := eps.Update(ctx, webSlice("192.0.2.101", "node-b", "192.0.2.102", nodeName), metav1.UpdateOptions{})
			return err
		}},
		{"slice moves to another Service", func() error {
			_, err := eps.Update(ctx, namedSlice("api-1", "db", "192.0.2.103", "node-b"), metav1.UpdateOptions{})
			return err
		}},
		{"Service deleted", func() error { return svcs.Delete(ctx, "web", metav1.DeleteOptions{}) }},
		{"Service added for an existing slice", func() error {
			_, err := svcs.Create(ctx, namedService("web", "198.51.100.9"), metav1.CreateOptions{})
			return err
		}},
		{"Service changed", func() error {
			_, err := svcs.Update(ctx, namedService("db", "198.51.100.4"), metav1.UpdateOptions{})
			return err
		}},
		{"slice deleted", func() error { return eps.Delete(ctx, "web-1", metav1.DeleteOptions{}) }},
	}
	for _, st := range steps {
		h.drainTrigger()
		if err := st.change(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		// Each step changes one object: its handler runs after its cache
		// holds the change.
		recv(t, h.agent.runner.trigger, st.name+" event")
		r, err := h.syncNow(t, ctx)
		if err != nil || r.result.Full {
			t.Fatalf("%s: full=%t err=%v, want a partial sync", st.name, r.result.Full, err)
		}
		if got, want := sortedLines(r.dump), fullBuildDump(t, h); got != want {
			t.Errorf("%s: table differs from a full build:\n got %s\nwant %s", st.name, got, want)
		}
	}
}

// fullBuildDump is what a full sync of every object the client holds writes.
func fullBuildDump(t *testing.T, h *harness) string {
	t.Helper()
	s, _ := h.client.CoreV1().Services("ns").List(context.Background(), metav1.ListOptions{})
	e, _ := h.client.DiscoveryV1().EndpointSlices("ns").List(context.Background(), metav1.ListOptions{})
	var svcs []*v1.Service
	for i := range s.Items {
		svcs = append(svcs, &s.Items[i])
	}
	var sl []*discoveryv1.EndpointSlice
	for i := range e.Items {
		sl = append(sl, &e.Items[i])
	}
	nft := knftables.NewFake(dataplane.TableFamily, dataplane.TableName)
	r := dataplane.Build(svcs, sl, dataplane.Node{Name: nodeName, IPs: h.agent.node(context.Background()).IPs}, dataplane.Options{})
	if _, err := dataplane.NewApplier(nft).Sync(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return sortedLines(nft.Dump())
}

func sortedLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestNetworkProgrammingDuration: a slice change stamped by the
// EndpointSlice controller is observed once its sync succeeds, from the
// stamp; stamps from before the agent started are not, nor deletions.
func TestNetworkProgrammingDuration(t *testing.T) {
	old := webSlice("192.0.2.101", "node-b")
	old.Annotations = map[string]string{v1.EndpointsLastChangeTriggerTime: t0.Add(-time.Hour).Format(time.RFC3339Nano)}
	h := newHarness(t, testNode(), webService(), old)
	ctx := h.startInformers(t)
	if _, err := h.syncNow(t, ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := programming(t, h, "IPv4"); n != 0 {
		t.Fatalf("%d observations for a slice stamped before the agent started", n)
	}

	changed := webSlice("192.0.2.101", "node-b", "192.0.2.102", nodeName)
	changed.Annotations = map[string]string{v1.EndpointsLastChangeTriggerTime: t0.Add(time.Second).Format(time.RFC3339Nano)}
	h.updateSlice(t, changed)
	h.clock.SetTime(t0.Add(1500 * time.Millisecond))
	h.flaky.fail.Store(true)
	if _, err := h.syncNow(t, ctx); err == nil {
		t.Fatal("injected failure did not fail the sync")
	}
	if n, _ := programming(t, h, "IPv4"); n != 0 {
		t.Fatalf("%d observations after a failed sync: the change is not in the kernel", n)
	}
	h.flaky.fail.Store(false)
	h.clock.SetTime(t0.Add(2 * time.Second))
	if _, err := h.syncNow(t, ctx); err != nil {
		t.Fatal(err)
	}
	if n, sum := programming(t, h, "IPv4"); n != 1 || sum != 1 {
		t.Errorf("after the sync that programs it: %d observations summing to %v s, want 1 of 1 s", n, sum)
	}
	if err := h.client.DiscoveryV1().EndpointSlices("ns").Delete(ctx, "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	recv(t, h.agent.runner.trigger, "the delete event")
	if _, err := h.syncNow(t, ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := programming(t, h, "IPv4"); n != 1 {
		t.Errorf("%d observations after a deletion, want still 1", n)
	}
}

func programming(t *testing.T, h *harness, family string) (uint64, float64) {
	t.Helper()
	var out dto.Metric
	if err := h.agent.metrics.programming.WithLabelValues(family).(prometheus.Histogram).Write(&out); err != nil {
		t.Fatal(err)
	}
	return out.GetHistogram().GetSampleCount(), out.GetHistogram().GetSampleSum()
}
