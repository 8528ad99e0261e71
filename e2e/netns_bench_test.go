package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/e2e/netlab"
	"github.com/heraldlb/herald/internal/testenv"
)

const iperfPort = 5201

// BenchmarkNodePortThroughput measures TCP throughput with iperf3 from the
// client to a pod through herald's NodePort (client → node n1 → pod a1)
// against the same pod reached directly (routed via n1, no NAT). The issue's
// goal is ≥ 0.9 of direct. Each iteration runs both, 3 s each.
//
//	go test ./e2e -run '^$' -bench NodePortThroughput -benchtime 5x
func BenchmarkNodePortThroughput(b *testing.B) {
	testenv.RequireTools(b, "the NodePort throughput benchmark", "iperf3")
	e := newNetEnv(b)
	client, pod := e.pods["client"], e.pods["a1"]
	server, err := pod.Start("iperf3", filepath.Join(e.dir, "iperf3.log"), "iperf3", "-s", "-p", fmt.Sprint(iperfPort))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { server.Stop(5 * time.Second) })
	svc := e.createService(b, &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "iperf"},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeNodePort,
			Ports: []v1.ServicePort{{Name: "iperf", Protocol: v1.ProtocolTCP, Port: iperfPort}}},
	})
	_, err = e.client.DiscoveryV1().EndpointSlices("default").Create(context.Background(), &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "iperf-lab", Labels: map[string]string{
			discoveryv1.LabelServiceName: "iperf", discoveryv1.LabelManagedBy: "herald-e2e"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("iperf"), Protocol: ptr.To(v1.ProtocolTCP),
			Port: ptr.To[int32](iperfPort)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{pod.IP.String()}, NodeName: ptr.To("n1"),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	direct := hostPort(pod.IP.String(), iperfPort)
	viaNodePort := hostPort(e.nodes["n1"].IP.String(), portOf(svc, "iperf", true))
	for _, addr := range []string{direct, viaNodePort} {
		waitDial(b, client.Netns, addr)
	}

	var directRates, nodePortRates []float64
	for b.Loop() {
		directRates = append(directRates, iperf(b, client.Netns, pod.IP.String(), iperfPort))
		nodePortRates = append(nodePortRates, iperf(b, client.Netns, e.nodes["n1"].IP.String(), portOf(svc, "iperf", true)))
	}
	d, n := median(directRates), median(nodePortRates)
	b.ReportMetric(d, "direct-Gbit/s")
	b.ReportMetric(n, "nodeport-Gbit/s")
	b.ReportMetric(n/d, "ratio")
}

func waitDial(b testing.TB, ns *netlab.Netns, addr string) {
	b.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 20*time.Second, true,
		func(context.Context) (bool, error) {
			_, err := dialTCP(ns, addr, time.Second)
			return err == nil, nil
		})
	if err != nil {
		b.Fatalf("%s not reachable within 20 s", addr)
	}
}

// iperf runs a 3-second iperf3 TCP test from ns and returns Gbit/s received.
func iperf(b testing.TB, ns *netlab.Netns, host string, port int32) float64 {
	b.Helper()
	out, err := ns.Run("iperf3", "-c", host, "-p", fmt.Sprint(port), "-t", "3", "-J")
	if err != nil {
		b.Fatalf("iperf3 to %s:%d: %v\n%s", host, port, err, out)
	}
	var result struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &result); err != nil {
		b.Fatalf("iperf3 output: %v\n%s", err, out)
	}
	return result.End.SumReceived.BitsPerSecond / 1e9
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
