package e2e

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/e2e/labkit"
	"github.com/heraldlb/herald/e2e/netlab"
)

// l2Env is the Layer 2 lab of labkit (three nodes and a client on one
// LAN, real apiserver, herald-ccm, one herald-agent per node forwarding and
// announcing), the lab `make demo` shows, with the tests' own helpers.
type l2Env struct {
	*labkit.L2
}

var adGVR = labkit.AdGVR

func newL2Env(t testing.TB, agentArgs ...string) *l2Env {
	t.Helper()
	netlab.SkipUnlessAble(t)
	prefetchBinaries()
	c := cluster.StartForTest(t, cluster.Options{})
	return &l2Env{L2: labkit.StartL2(t, c, labkit.L2Options{Bin: labBinaries(t), CRDDir: crdDir, Dir: t.TempDir(), AgentArgs: agentArgs})}
}

// labBinaries are the commands built for this test binary.
func labBinaries(t testing.TB) labkit.Binaries {
	return labkit.Binaries{CCM: heraldBinary(t, "herald-ccm"), Agent: heraldBinary(t, "herald-agent"), Echo: heraldBinary(t, "echo")}
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

func anyNode(string) bool { return true }

// vipOf returns the Service's address of one family.
func vipOf(t testing.TB, svc *v1.Service, v6 bool) netip.Addr {
	t.Helper()
	a, ok := labkit.VIP(svc, v6)
	if !ok {
		t.Fatalf("Service %s has no IPv6=%v address: %+v", svc.Name, v6, svc.Status.LoadBalancer.Ingress)
	}
	return a
}

// waitAnnouncerStable waits until the Service's announcer has not changed
// for quiet: a node that comes back rejoins, settles and may take its
// addresses back, and a measurement must not start in the middle of that.
func (e *l2Env) waitAnnouncerStable(t testing.TB, name string, quiet time.Duration) string {
	t.Helper()
	last, since := "", time.Now()
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		node := e.WaitAnnouncer("default", name, "is announced", anyNode)
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

// hasEvent reports whether the Service has an event of reason whose
// message contains text.
func (e *l2Env) hasEvent(service, reason, text string) bool {
	events, err := e.Kube.CoreV1().Events("default").List(context.Background(),
		metav1.ListOptions{FieldSelector: "involvedObject.name=" + service + ",reason=" + reason})
	if err != nil {
		return false
	}
	for _, ev := range events.Items {
		if strings.Contains(ev.Message, text) {
			return true
		}
	}
	return false
}
