// Command demo shows herald-ccm at work on a real kube-apiserver: it starts
// etcd and kube-apiserver on loopback, registers two Nodes, runs herald-ccm
// with an address pool, creates a LoadBalancer Service and prints what
// `kubectl get svc` and `kubectl describe svc` show once it has its address.
// The full lab (network namespaces as nodes, a BGP router, a client) grows
// from this.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/e2e/cluster"
)

const cloudConfig = `backend: bare-metal
bareMetal:
  pools:
  - name: demo
    addresses: ["198.51.100.10-198.51.100.19", "2001:db8:100::/120"]
`

func main() {
	k8sBin := flag.String("k8s-bin", "", "folder with kube-apiserver, etcd and kubectl (make tools prints it)")
	ccmBinary := flag.String("ccm", "bin/herald-ccm", "herald-ccm binary")
	keep := flag.Bool("keep", false, "keep the cluster running until interrupted, to explore it with kubectl")
	flag.Parse()
	if *k8sBin == "" {
		fmt.Fprintln(os.Stderr, "demo: --k8s-bin is required (run `make demo`)")
		os.Exit(2)
	}
	if _, err := os.Stat(*ccmBinary); err != nil {
		fmt.Fprintf(os.Stderr, "demo: --ccm: %v (run `make build`)\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *k8sBin, *ccmBinary, *keep); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, k8sBin, ccmBinary string, keep bool) error {
	step("Starting etcd and kube-apiserver v1.37.2 on 127.0.0.1")
	c, err := cluster.Start(ctx, cluster.Options{BinDir: k8sBin})
	if err != nil {
		return err
	}
	defer c.Stop()
	fmt.Printf("    ready in %v at %s\n", c.StartupDuration.Round(time.Millisecond), c.Config.Host)
	client := kubernetes.NewForConfigOrDie(c.Config)

	step("Registering nodes node-a and node-b")
	for i, name := range []string{"node-a", "node-b"} {
		if err := registerNode(ctx, client, name, fmt.Sprintf("192.0.2.%d", 11+i)); err != nil {
			return err
		}
	}

	step("Starting herald-ccm with address pool demo (198.51.100.10-19, 2001:db8:100::/120)")
	configPath := filepath.Join(c.Dir(), "cloud-config.yaml")
	if err := os.WriteFile(configPath, []byte(cloudConfig), 0o600); err != nil {
		return err
	}
	ccm, err := cluster.StartProcess("herald-ccm", filepath.Join(c.Dir(), "herald-ccm.log"), ccmBinary,
		"--kubeconfig="+c.Kubeconfig, "--cloud-provider=herald", "--cloud-config="+configPath,
		"--cluster-name=demo", "--leader-elect=false", "--controllers=service-lb-controller,herald-class-controller", "--secure-port=0")
	if err != nil {
		return err
	}
	defer ccm.Stop(10 * time.Second)

	step("Creating Service web/front (type LoadBalancer, dual-stack)")
	if _, err := client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "web"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	policy := v1.IPFamilyPolicyPreferDualStack
	created := time.Now()
	_, err = client.CoreV1().Services("web").Create(ctx, &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "front"},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, IPFamilyPolicy: &policy,
			Selector: map[string]string{"app": "front"},
			Ports:    []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := ccm.ExitedErr(); err != nil {
			return false, err
		}
		svc, err := client.CoreV1().Services("web").Get(ctx, "front", metav1.GetOptions{})
		return err == nil && len(svc.Status.LoadBalancer.Ingress) > 0, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the Service's address: %w\nherald-ccm log:\n%s", err, ccm.LogTail(20))
	}
	fmt.Printf("    address assigned %v after the Service was created\n", time.Since(created).Round(time.Millisecond))

	step("kubectl get svc -n web")
	kubectl(c, "get", "svc", "-n", "web", "-o", "wide")
	step("kubectl describe svc -n web front")
	kubectl(c, "describe", "svc", "-n", "web", "front")

	if !keep {
		step("Done; stopping herald-ccm, kube-apiserver and etcd (use --keep to explore)")
		return nil
	}
	step("Cluster kept running; try: KUBECONFIG=" + c.Kubeconfig + " " + filepath.Join(k8sBin, "kubectl") + " get svc -A")
	fmt.Println("    Ctrl-C stops everything.")
	<-ctx.Done()
	return nil
}

func registerNode(ctx context.Context, client kubernetes.Interface, name, address string) error {
	node, err := client.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	node.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: address}}
	node.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "KubeletReady",
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	_, err = client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}

func step(s string) { fmt.Printf("==> %s\n", s) }

func kubectl(c *cluster.Cluster, args ...string) {
	cmd := exec.Command(filepath.Join(c.BinDir, "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			fmt.Fprintf(os.Stderr, "kubectl exited %d\n", exit.ExitCode())
		}
	}
}
