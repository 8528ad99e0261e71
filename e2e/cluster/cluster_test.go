package cluster

import (
	"context"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Two clusters at once must not collide: parallel test packages each start
// their own.
func TestTwoClustersRunSideBySide(t *testing.T) {
	// Skip and Fatal only work on the test's goroutine: the starting ones
	// return errors instead.
	binDir := BinDirForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	clusters := make([]*Cluster, 2)
	errs := make([]error, 2)
	for i := range clusters {
		wg.Go(func() { clusters[i], errs[i] = Start(ctx, Options{BinDir: binDir}) })
	}
	wg.Wait()
	for _, c := range clusters {
		if c != nil {
			t.Cleanup(c.Stop)
		}
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("cluster %d: %v", i, err)
		}
	}
	if clusters[0].Config.Host == clusters[1].Config.Host {
		t.Fatalf("both clusters on %s", clusters[0].Config.Host)
	}
	for i, c := range clusters {
		client := kubernetes.NewForConfigOrDie(c.Config)
		version, err := client.Discovery().ServerVersion()
		if err != nil {
			t.Fatalf("cluster %d: %v", i, err)
		}
		if version.GitVersion != "v1.37.2" {
			t.Errorf("cluster %d reports %s, want v1.37.2 (build ldflags)", i, version.GitVersion)
		}
		ns := &metav1.ObjectMeta{Name: "only-in-cluster-" + string(rune('a'+i))}
		if _, err := client.CoreV1().Namespaces().Create(context.Background(), nsObject(ns.Name), metav1.CreateOptions{}); err != nil {
			t.Fatalf("cluster %d: %v", i, err)
		}
	}
	// Each cluster has its own etcd: a namespace made in one is absent in the other.
	other := kubernetes.NewForConfigOrDie(clusters[1].Config)
	if _, err := other.CoreV1().Namespaces().Get(context.Background(), "only-in-cluster-a", metav1.GetOptions{}); err == nil {
		t.Fatal("namespace created in cluster 0 is visible in cluster 1")
	}
	out, err := exec.Command(clusters[0].BinDir+"/kubectl", "--kubeconfig", clusters[0].Kubeconfig, "get", "ns", "-o", "name").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "namespace/only-in-cluster-a") {
		t.Fatalf("kubectl with the written kubeconfig: %v\n%s", err, out)
	}
}
