package scale

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/aws/awsfake"
	"github.com/heraldlb/herald/aws/build"
	"github.com/heraldlb/herald/e2e/cluster"
)

var (
	awsEnabled  = flag.Bool("scale.aws", false, "run the AWS scale test (1,000 kwok Nodes, 100 Services, herald's AWS fake)")
	awsNodes    = flag.Int("scale.aws.nodes", 1000, "kwok Nodes with AWS provider IDs")
	awsServices = flag.Int("scale.aws.services", 100, "LoadBalancer Services")
	awsOut      = flag.String("scale.aws.out", "", "write the calls per operation as JSON here")
)

const awsClusterName = "herald-scale"

// awsPhase is the AWS calls one phase cost, by "family:Operation".
type awsPhase struct {
	Calls   map[string]int `json:"calls"`
	Total   int            `json:"total"`
	Writes  int            `json:"writes"`
	Seconds float64        `json:"seconds"`
}

func phaseOf(fake *awsfake.Server, began time.Time) awsPhase {
	p := awsPhase{Calls: fake.Counts(), Seconds: time.Since(began).Seconds()}
	for _, n := range p.Calls {
		p.Total += n
	}
	p.Writes = fake.MutatingCalls()
	return p
}

// TestAWSScale measures the AWS calls herald makes with 1,000 Nodes and
// 100 Services: creating them all, one Node joining, and a no-op resync
// (a restarted herald-ccm re-ensuring every Service from a cold cache).
func TestAWSScale(t *testing.T) {
	if !*awsEnabled {
		t.Skip("AWS scale test not requested: run `make scale-aws`")
	}
	ccmBinary := buildCommand(t, "herald-ccm")
	kwok, kwokDir := installKWOK(t)
	fake := awsfake.New()
	fake.Start()
	t.Cleanup(fake.Close)
	fake.AddSecurityGroup("nodes", map[string]string{build.ClusterTagKey(awsClusterName): "owned"})

	c := cluster.StartForTest(t, cluster.Options{})
	client := fastClient(t, c.Config)
	startKWOK(t, c, kwok, kwokDir)
	createAWSNodes(t, client, fake, 0, *awsNodes)
	waitNodesReady(t, client, *awsNodes)
	ccm := startAWSCCM(t, c, ccmBinary, fake)

	phases := map[string]awsPhase{}
	createNamespace(t, client, namespace)
	fake.ResetCalls()
	began := time.Now()
	for i := range *awsServices {
		svc := newService(namespace, fmt.Sprintf("svc-%03d", i))
		svc.Spec.AllocateLoadBalancerNodePorts = nil // NLB instance targets need NodePorts
		if _, err := client.CoreV1().Services(namespace).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 15*time.Minute, "every Service has its NLB", func() bool { return hostnames(t, client) == *awsServices })
	phases["create_all"] = phaseOf(fake, began)

	fake.ResetCalls()
	began = time.Now()
	createAWSNodes(t, client, fake, *awsNodes, 1)
	newID := instanceID(*awsNodes)
	waitUntil(t, 5*time.Minute, "the new node registered in every target group", func() bool {
		return registeredEverywhere(fake, newID) == *awsServices
	})
	phases["one_node_added"] = phaseOf(fake, began)

	ccm.Stop(30 * time.Second)
	fake.ResetCalls()
	began = time.Now()
	ccm = startAWSCCM(t, c, ccmBinary, fake)
	// Each re-ensured Service reads its listeners and its target group's
	// targets once (cold cache after the restart).
	waitUntil(t, 5*time.Minute, "every Service re-ensured", func() bool {
		counts := fake.Counts()
		return counts["elbv2:DescribeListeners"] >= *awsServices && counts["elbv2:DescribeTargetHealth"] >= *awsServices
	})
	phases["noop_resync_after_restart"] = phaseOf(fake, began)
	if err := ccm.ExitedErr(); err != nil {
		t.Fatal(err)
	}
	reportAWS(t, phases)

	if p := phases["one_node_added"]; p.Calls["elbv2:RegisterTargets"] != *awsServices || p.Writes != *awsServices ||
		p.Total != *awsServices {
		t.Errorf("one node added cost %v; want exactly one RegisterTargets per target group (%d) and nothing else", p.Calls, *awsServices)
	}
	if p := phases["noop_resync_after_restart"]; p.Writes != 0 {
		t.Errorf("a no-op resync made %d writes: %v", p.Writes, p.Calls)
	}
}

func instanceID(i int) string { return fmt.Sprintf("i-%017d", i) }

// createAWSNodes creates kwok Nodes first..first+n-1 with provider IDs of
// instances the fake knows.
func createAWSNodes(t *testing.T, client kubernetes.Interface, fake *awsfake.Server, first, n int) {
	t.Helper()
	for i := first; i < first+n; i++ {
		fake.AddInstance(awsfake.Instance{ID: instanceID(i), Zone: "eu-west-1a"})
	}
	parallel(t, n, func(ctx context.Context, i int) error {
		name := fmt.Sprintf("kwok-node-%04d", first+i)
		node := &v1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        name,
				Annotations: map[string]string{kwokAnnotation: "fake", "node.alpha.kubernetes.io/ttl": "0"},
				Labels:      map[string]string{"type": "kwok", "kubernetes.io/hostname": name},
			},
			Spec: v1.NodeSpec{ProviderID: "aws:///eu-west-1a/" + instanceID(first+i),
				Taints: []v1.Taint{{Key: kwokAnnotation, Value: "fake", Effect: v1.TaintEffectNoSchedule}}},
		}
		_, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		return err
	})
}

func startAWSCCM(t *testing.T, c *cluster.Cluster, binary string, fake *awsfake.Server) *cluster.Process {
	t.Helper()
	dir := t.TempDir()
	config := fmt.Sprintf(`backend: aws
aws:
  clusterName: %s
  region: %s
  vpcID: %s
  endpoints: {elbv2: %q, ec2: %q}
  rateLimits: {elbv2: {qps: 50, burst: 50}, ec2: {qps: 50, burst: 50}}
`, awsClusterName, fake.Region, fake.VPCID(), fake.URL(), fake.URL())
	path := filepath.Join(dir, "cloud-config.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := cluster.StartProcess("herald-ccm", filepath.Join(dir, "herald-ccm.log"), "/usr/bin/env",
		"AWS_ACCESS_KEY_ID=AKIDHERALDSCALE", "AWS_SECRET_ACCESS_KEY=test", "AWS_EC2_METADATA_DISABLED=true", binary,
		"--kubeconfig="+c.Kubeconfig, "--cloud-provider=herald", "--cloud-config="+path,
		"--cluster-name="+awsClusterName, "--leader-elect=false", "--controllers=service-lb-controller",
		"--concurrent-service-syncs=4", "--kube-api-qps=200", "--kube-api-burst=400", "--secure-port=0", "--v=1")
	if err != nil {
		t.Fatal(err)
	}
	p.StopAtCleanup(t, 60)
	return p
}

func hostnames(t *testing.T, client kubernetes.Interface) int {
	list, err := client.CoreV1().Services(namespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return 0
	}
	n := 0
	for _, s := range list.Items {
		if len(s.Status.LoadBalancer.Ingress) == 1 && s.Status.LoadBalancer.Ingress[0].Hostname != "" {
			n++
		}
	}
	return n
}

// registeredEverywhere counts the target groups holding instance id.
func registeredEverywhere(fake *awsfake.Server, id string) int {
	n := 0
	for _, r := range fake.Resources() {
		if r.Kind != "targetgroup" {
			continue
		}
		_, name, _ := strings.Cut(r.ID, ":targetgroup/")
		name, _, _ = strings.Cut(name, "/")
		for _, target := range fake.Targets(name) {
			if target == id {
				n++
				break
			}
		}
	}
	return n
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, timeout, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("%s: not within %v", what, timeout)
	}
}

func reportAWS(t *testing.T, phases map[string]awsPhase) {
	t.Helper()
	out, err := json.MarshalIndent(map[string]any{"nodes": *awsNodes + 1, "services": *awsServices, "phases": phases,
		"date": time.Now().UTC().Format(time.RFC3339)}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"create_all", "one_node_added", "noop_resync_after_restart"} {
		p := phases[name]
		ops := make([]string, 0, len(p.Calls))
		for op, n := range p.Calls {
			ops = append(ops, fmt.Sprintf("%s=%d", op, n))
		}
		sort.Strings(ops)
		t.Logf("%s: %d calls (%d writes) in %.1fs: %s", name, p.Total, p.Writes, p.Seconds, strings.Join(ops, " "))
	}
	path := *awsOut
	if path == "" {
		path = filepath.Join(t.TempDir(), "aws-scale.json")
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("figures written to %s", path)
}
