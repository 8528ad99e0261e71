package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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

const awsCluster = "herald-e2e"

// awsEnv is the environment herald-ccm gets: static test credentials, so
// the SDK's default chain never reaches for an instance profile.
var awsEnv = []string{"AWS_ACCESS_KEY_ID=AKIDHERALDTEST", "AWS_SECRET_ACCESS_KEY=test", "AWS_EC2_METADATA_DISABLED=true"}

// awsCloudConfig points herald-ccm at an AWS stand-in.
func awsCloudConfig(endpoint, region, vpcID, extra string) string {
	return fmt.Sprintf(`backend: aws
aws:
  clusterName: %s
  region: %s
  vpcID: %s
  endpoints: {elbv2: %q, ec2: %q}
  retry: {maxBackoff: 200ms}
%s`, awsCluster, region, vpcID, endpoint, endpoint, extra)
}

// startAWSCCM runs herald-ccm with the AWS backend, by PID, until the test
// ends; env(1) execs it, so the PID is herald-ccm's own.
func startAWSCCM(t testing.TB, c *cluster.Cluster, cloudConfig string, extraArgs ...string) *ccm {
	t.Helper()
	dir := t.TempDir()
	configPath := filepath.Join(dir, "cloud-config.yaml")
	if err := os.WriteFile(configPath, []byte(cloudConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append(slices.Clone(awsEnv), heraldBinary(t, "herald-ccm"),
		"--kubeconfig="+c.Kubeconfig,
		"--cloud-provider=herald",
		"--cloud-config="+configPath,
		"--cluster-name="+awsCluster,
		"--leader-elect=false",
		"--controllers=service-lb-controller,herald-class-controller",
		"--secure-port=0",
		"--v=2")
	p, err := cluster.StartProcess("herald-ccm", filepath.Join(dir, "herald-ccm.log"), "/usr/bin/env", append(args, extraArgs...)...)
	if err != nil {
		t.Fatal(err)
	}
	p.StopAtCleanup(t, 80)
	return &ccm{Process: p}
}

// startFakeAWS serves the fake for this test, with the nodes' security group.
func startFakeAWS(t *testing.T) *awsfake.Server {
	t.Helper()
	fake := awsfake.New()
	fake.Start()
	t.Cleanup(fake.Close)
	fake.AddSecurityGroup("nodes", map[string]string{build.ClusterTagKey(awsCluster): "owned"})
	return fake
}

// createAWSNodes creates Ready Nodes whose provider IDs name instances
// the fake knows.
func createAWSNodes(t testing.TB, client kubernetes.Interface, fake *awsfake.Server, names ...string) {
	t.Helper()
	ctx := context.Background()
	for _, name := range names {
		id := "i-" + name
		fake.AddInstance(awsfake.Instance{ID: id, Zone: "eu-west-1a"})
		node, err := client.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1.NodeSpec{ProviderID: "aws:///eu-west-1a/" + id}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		node.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue,
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(), Reason: "KubeletReady"}}
		if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func hasHostname(svc *v1.Service) bool {
	return len(svc.Status.LoadBalancer.Ingress) == 1 && strings.HasSuffix(svc.Status.LoadBalancer.Ingress[0].Hostname, ".amazonaws.com")
}

// stackIn returns what the fake holds for a Service, by kind.
func stackIn(fake *awsfake.Server, serviceKey string) map[string][]awsfake.Resource {
	out := map[string][]awsfake.Resource{}
	for _, r := range fake.Resources() {
		if r.Tags[build.TagService] == serviceKey {
			out[r.Kind] = append(out[r.Kind], r)
		}
	}
	return out
}

// waitFor polls cond until it holds or the timeout ends, reporting what.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("%s: not within %v", what, timeout)
	}
}

// ownedLeft lists every resource in the fake that herald owns, and every
// node-group rule it made.
func ownedLeft(fake *awsfake.Server) []string {
	var left []string
	for _, r := range fake.Resources() {
		if r.Tags[build.TagCluster] != "" || strings.HasPrefix(r.Tags["description"], "herald.dev/") || r.Kind == "listener" {
			left = append(left, r.Kind+" "+r.ID)
		}
	}
	return left
}
