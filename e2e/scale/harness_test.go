package scale

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/heraldlb/herald/e2e/cluster"
)

// kwok manages the Nodes that carry this annotation (its documented
// selector for fake Nodes) and nothing else.
const kwokAnnotation = "kwok.x-k8s.io/node"

// startKWOK runs kwok against c by PID until the test ends.
func startKWOK(t *testing.T, c *cluster.Cluster, binary, moduleDir string) {
	t.Helper()
	args := []string{"--kubeconfig=" + c.Kubeconfig,
		"--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=" + kwokAnnotation + "=fake",
		"--node-ip=192.0.2.1"}
	for _, stage := range kwokStages(moduleDir) {
		if _, err := os.Stat(stage); err != nil {
			t.Fatalf("kwok stage config: %v", err)
		}
		args = append(args, "--config="+stage)
	}
	p, err := cluster.StartProcess("kwok", filepath.Join(t.TempDir(), "kwok.log"), binary, args...)
	if err != nil {
		t.Fatal(err)
	}
	p.StopAtCleanup(t, 30)
}

// startCCM runs herald-ccm with the scale pool and extra flags by PID until
// the test ends.
// A memLimit sets its GOMEMLIMIT; env(1) execs it, so the PID is its own.
func startCCM(t *testing.T, c *cluster.Cluster, binary, memLimit string, extra []string) *cluster.Process {
	t.Helper()
	dir := t.TempDir()
	configPath := filepath.Join(dir, "cloud-config.yaml")
	if err := os.WriteFile(configPath, []byte(cloudConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{
		"--kubeconfig=" + c.Kubeconfig,
		"--cloud-provider=herald",
		"--cloud-config=" + configPath,
		"--cluster-name=herald-scale",
		"--leader-elect=false",
		"--controllers=service-lb-controller",
		"--v=2",
	}, extra...)
	if memLimit != "" {
		args = append([]string{"GOMEMLIMIT=" + memLimit, binary}, args...)
		binary = "/usr/bin/env"
	}
	p, err := cluster.StartProcess("herald-ccm", filepath.Join(dir, "herald-ccm.log"), binary, args...)
	if err != nil {
		t.Fatal(err)
	}
	p.StopAtCleanup(t, 60)
	return p
}

// parallel runs do for 0..n-1 on the test's workers and fails the test
// with the first error.
func parallel(t testing.TB, n int, do func(ctx context.Context, i int) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, *createConns)
	for w := range *createConns {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := do(ctx, i); err != nil {
					errs[w] = fmt.Errorf("item %d: %w", i, err)
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// createNodes creates n Nodes for kwok: its annotation, the labels and
// taint its documentation gives fake Nodes, so nothing real lands there.
func createNodes(t *testing.T, client kubernetes.Interface, n int) {
	t.Helper()
	parallel(t, n, func(ctx context.Context, i int) error {
		name := fmt.Sprintf("kwok-node-%04d", i)
		node := &v1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        name,
				Annotations: map[string]string{kwokAnnotation: "fake", "node.alpha.kubernetes.io/ttl": "0"},
				Labels: map[string]string{"type": "kwok", "kubernetes.io/hostname": name,
					"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "kubernetes.io/role": "agent"},
			},
			Spec: v1.NodeSpec{Taints: []v1.Taint{{Key: kwokAnnotation, Value: "fake", Effect: v1.TaintEffectNoSchedule}}},
		}
		_, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		return err
	})
}

// waitNodesReady polls until kwok has made all n Nodes Ready.
func waitNodesReady(t *testing.T, client kubernetes.Interface, n int) {
	t.Helper()
	began := time.Now()
	ready := 0
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, 5*time.Minute, true,
		func(ctx context.Context) (bool, error) {
			list, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "type=kwok"})
			if err != nil {
				return false, nil //nolint:nilerr // keep polling through transient errors
			}
			ready = 0
			for i := range list.Items {
				if isReady(&list.Items[i]) {
					ready++
				}
			}
			return ready == n, nil
		})
	if err != nil {
		t.Fatalf("%d of %d Nodes Ready after 5 min", ready, n)
	}
	t.Logf("%d kwok Nodes Ready in %v", n, time.Since(began).Round(time.Millisecond))
}

func isReady(node *v1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// ingressWatch counts the Services of a namespace that have an ingress IP
// and when the last one got it, from an informer: precise without loading
// the apiserver with lists of thousands of Services.
type ingressWatch struct {
	mu   sync.Mutex
	has  map[string]bool
	last time.Time
}

func watchIngress(t *testing.T, client kubernetes.Interface, namespace string) *ingressWatch {
	t.Helper()
	w := &ingressWatch{has: map[string]bool{}}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace))
	observe := func(obj any) {
		svc, ok := obj.(*v1.Service)
		if !ok || len(svc.Status.LoadBalancer.Ingress) == 0 {
			return
		}
		now := time.Now()
		w.mu.Lock()
		defer w.mu.Unlock()
		if !w.has[svc.Name] {
			w.has[svc.Name] = true
			w.last = now
		}
	}
	_, err := factory.Core().V1().Services().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    observe,
		UpdateFunc: func(_, obj any) { observe(obj) },
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	factory.Start(stop)
	factory.WaitForCacheSync(stop)
	return w
}

func (w *ingressWatch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.has)
}

// waitAll polls until n Services have their IP and returns when the last
// one got it. It stops early if herald-ccm dies.
func (w *ingressWatch) waitAll(t *testing.T, n int, timeout time.Duration, exited func() error) time.Time {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true,
		func(context.Context) (bool, error) {
			if err := exited(); err != nil {
				return false, err
			}
			return w.count() >= n, nil
		})
	if err != nil {
		t.Fatalf("%d of %d Services have an IP after %v: %v", w.count(), n, timeout, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// cpuSeconds is the user+system CPU time a process has used, from
// /proc/<pid>/stat (fields 14 and 15, in clock ticks of 1/100 s on Linux).
func cpuSeconds(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; the fields after it are fixed.
	_, rest, ok := strings.Cut(string(data), ") ")
	if !ok {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	fields := strings.Fields(rest)
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	var utime, stime float64
	if _, err := fmt.Sscan(fields[11], &utime); err != nil {
		return 0, err
	}
	if _, err := fmt.Sscan(fields[12], &stime); err != nil {
		return 0, err
	}
	return (utime + stime) / 100, nil
}
