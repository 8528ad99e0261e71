package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/e2e/labkit"
)

var (
	binaryOnce sync.Once
	binaryDir  string
	binaryErr  error
)

// heraldBinary builds a herald command (or the network tier's echo server)
// once per test binary, so the tests exercise exactly what users run, flags
// and all.
func heraldBinary(t testing.TB, name string) string {
	t.Helper()
	binaryOnce.Do(buildBinaries)
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return filepath.Join(binaryDir, name)
}

// prefetchBinaries starts the build in the background, so that it overlaps
// with a test's other setup (the apiserver, the network lab).
func prefetchBinaries() { go binaryOnce.Do(buildBinaries) }

func buildBinaries() {
	binaryDir, binaryErr = os.MkdirTemp("", "herald-bin-")
	if binaryErr != nil {
		return
	}
	// The version stamp, as `make build` sets it.
	ldflags, err := exec.Command("make", "-s", "--no-print-directory", "-C", "..", "ldflags").Output()
	if err != nil {
		binaryErr = fmt.Errorf("make ldflags: %w", err)
		return
	}
	out, err := exec.Command("go", "build", "-ldflags", strings.TrimSpace(string(ldflags)), "-o", binaryDir, "../cmd/...", "./echo").CombinedOutput()
	if err != nil {
		binaryErr = fmt.Errorf("go build ../cmd/... ./echo: %w\n%s", err, out)
	}
}

// configWithPool is a bare-metal cloud config with one pool.
func configWithPool(name string, addresses ...string) string {
	quoted := make([]string, len(addresses))
	for i, a := range addresses {
		quoted[i] = strconv.Quote(a)
	}
	return fmt.Sprintf("backend: bare-metal\nbareMetal:\n  pools:\n  - name: %s\n    addresses: [%s]\n", name, strings.Join(quoted, ", "))
}

// ccm is a running herald-ccm.
type ccm struct {
	*cluster.Process
	// metricsURL and token reach its /metrics.
	metricsURL, token string
}

// startCCM runs herald-ccm against c with the given cloud config and stops
// it (by PID) when the test ends. It serves /metrics on a free loopback
// port as the README tells an operator running it by hand: authentication
// and authorization delegated to the apiserver, scraped with a token
// allowed to get /metrics (here the cluster-admin's).
func startCCM(t testing.TB, c *cluster.Cluster, cloudConfig string, extraArgs ...string) *ccm {
	t.Helper()
	port := cluster.FreePort(t)
	extraArgs = append([]string{"--secure-port=" + strconv.Itoa(port), "--bind-address=127.0.0.1",
		"--authentication-kubeconfig=" + c.Kubeconfig, "--authorization-kubeconfig=" + c.Kubeconfig}, extraArgs...)
	p := labkit.StartCCM(t, c, labBinaries(t), t.TempDir(), cloudConfig, extraArgs...)
	return &ccm{Process: p, metricsURL: fmt.Sprintf("https://127.0.0.1:%d/metrics", port), token: c.Config.BearerToken}
}

// stop ends the CCM now (SIGTERM, as a rolling update would).
func (m *ccm) stop() { m.Stop(10 * time.Second) }

// requireRunning fails the test if the CCM has died.
func (m *ccm) requireRunning(t testing.TB) {
	t.Helper()
	if err := m.ExitedErr(); err != nil {
		t.Fatalf("herald-ccm died: %v", err)
	}
}

func createNodes(t testing.TB, client kubernetes.Interface, names ...string) {
	t.Helper()
	ctx := context.Background()
	for i, name := range names {
		node, err := client.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		node.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue,
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(), Reason: "KubeletReady"}}
		node.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: fmt.Sprintf("192.0.2.%d", 11+i)}}
		if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func createNamespace(t testing.TB, client kubernetes.Interface, name string) {
	t.Helper()
	if _, err := client.CoreV1().Namespaces().Create(context.Background(),
		&v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// newService returns a Service of the given type with one TCP port.
func newService(namespace, name string, typ v1.ServiceType, annotations map[string]string) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Annotations: annotations},
		Spec: v1.ServiceSpec{
			Type:     typ,
			Selector: map[string]string{"app": name},
			Ports:    []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80}},
		},
	}
}

// toClusterIP makes svc a ClusterIP Service, as a user who no longer wants
// a load balancer would: no class, no NodePorts.
func toClusterIP(t testing.TB, client kubernetes.Interface, svc *v1.Service) {
	t.Helper()
	// herald-ccm may write the Service (annotations, conditions) at any
	// moment, as any controller would: change the latest version, as
	// kubectl edit does.
	services := client.CoreV1().Services(svc.Namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		latest, err := services.Get(context.Background(), svc.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		latest.Spec.Type = v1.ServiceTypeClusterIP
		latest.Spec.LoadBalancerClass = nil
		for i := range latest.Spec.Ports {
			latest.Spec.Ports[i].NodePort = 0
		}
		_, err = services.Update(context.Background(), latest, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func createService(t testing.TB, client kubernetes.Interface, svc *v1.Service) *v1.Service {
	t.Helper()
	created, err := client.CoreV1().Services(svc.Namespace).Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return created
}

const waitTimeout = labkit.WaitTimeout

// waitForService polls until cond holds for the Service, and returns it.
func waitForService(t testing.TB, client kubernetes.Interface, namespace, name, what string, cond func(*v1.Service) bool) *v1.Service {
	t.Helper()
	return labkit.WaitService(t, client, namespace, name, what, cond)
}

// waitForServiceWithin is waitForService with a timeout of its own.
func waitForServiceWithin(t testing.TB, client kubernetes.Interface, namespace, name, what string, timeout time.Duration,
	cond func(*v1.Service) bool) *v1.Service {
	t.Helper()
	return labkit.WaitServiceWithin(t, client, namespace, name, what, timeout, cond)
}

func hasIngress(svc *v1.Service) bool { return len(svc.Status.LoadBalancer.Ingress) > 0 }

func ingressIPs(svc *v1.Service) []string {
	var ips []string
	for _, in := range svc.Status.LoadBalancer.Ingress {
		ips = append(ips, in.IP)
	}
	return ips
}

// waitForEvent polls until an event with reason exists for the Service and
// returns its message.
func waitForEvent(t testing.TB, client kubernetes.Interface, namespace, name, eventType, reason string) string {
	t.Helper()
	var message string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, waitTimeout, true,
		func(ctx context.Context) (bool, error) {
			events, err := client.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{
				FieldSelector: "involvedObject.kind=Service,involvedObject.name=" + name})
			if err != nil {
				return false, nil //nolint:nilerr // keep polling through transient errors
			}
			for _, e := range events.Items {
				if e.Type == eventType && e.Reason == reason {
					message = e.Message
					return true, nil
				}
			}
			return false, nil
		})
	if err != nil {
		t.Fatalf("no %s event %q for service %s/%s within %v", eventType, reason, namespace, name, waitTimeout)
	}
	return message
}

func countEvents(t testing.TB, client kubernetes.Interface, namespace, reason string) int {
	t.Helper()
	events, err := client.CoreV1().Events(namespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range events.Items {
		if e.Reason == reason {
			n += int(e.Count)
		}
	}
	return n
}

func kubectl(t testing.TB, c *cluster.Cluster, args ...string) string {
	t.Helper()
	return labkit.Kubectl(t, c, args...)
}

// waitForServiceAbsent polls until the Service is gone: its finalizer was
// removed and the deletion completed.
func waitForServiceAbsent(t testing.TB, client kubernetes.Interface, namespace, name string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, waitTimeout, true,
		func(ctx context.Context) (bool, error) {
			_, err := client.CoreV1().Services(namespace).Get(ctx, name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
	if err != nil {
		t.Fatalf("service %s/%s still exists after %v", namespace, name, waitTimeout)
	}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
