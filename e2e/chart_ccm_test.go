package e2e

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/aws/awsfake"
	"github.com/heraldlb/herald/e2e/cluster"
)

const (
	// uninitializedTaint marks a Node whose kubelet waits for cloud-node.
	uninitializedTaint = "node.cloudprovider.kubernetes.io/uninitialized"
	backendBareMetal   = "bare-metal"
	backendAWS         = "aws"
)

// defaultControllers are values.yaml's ccm.controllers.
var defaultControllers = []string{"service-lb-controller", "herald-class-controller"}

// ccmRulesFor is exactly what herald-ccm uses with the backend and the
// controllers: the Service controllers' reads and writes, Nodes and
// Namespaces (informers), Events; on bare metal the IPAddress claims and
// IPAddressPools; cloud-node writes Nodes (labels, taints, provider ID)
// and their status (addresses); cloud-node-lifecycle taints and deletes
// Nodes.
func ccmRulesFor(backend string, controllers []string) []rbacv1.PolicyRule {
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"get", "list", "watch", "update", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"services/status"}, Verbs: []string{"update", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch", "update"}},
	}
	if backend == backendBareMetal {
		rules = append(rules,
			rbacv1.PolicyRule{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"ipaddresses"}, Verbs: []string{"get", "list", "watch", "create", "update", "delete"}},
			rbacv1.PolicyRule{APIGroups: []string{"herald.dev"}, Resources: []string{"ipaddresspools"}, Verbs: []string{"get", "list", "watch"}},
			rbacv1.PolicyRule{APIGroups: []string{"herald.dev"}, Resources: []string{"ipaddresspools/status"}, Verbs: []string{"update", "patch"}})
	}
	if slices.Contains(controllers, "cloud-node") {
		rules = append(rules,
			rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"update", "patch"}},
			rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}})
	}
	if slices.Contains(controllers, "cloud-node-lifecycle") {
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"patch", "delete"}})
	}
	return rules
}

// checkCCMRules compares herald-ccm's installed ClusterRole with want.
func checkCCMRules(t *testing.T, client kubernetes.Interface, name string, want []rbacv1.PolicyRule) {
	t.Helper()
	role, err := client.RbacV1().ClusterRoles().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(role.Rules, want) {
		t.Errorf("ClusterRole %s grants\n%+v\nwant exactly\n%+v", name, role.Rules, want)
	}
}

// awsChartValues is the README's EKS values with what a test needs on
// top: herald's AWS fake as the endpoints, and the controllers that
// initialise and retire Nodes from EC2 (a self-managed cluster on EC2).
func awsChartValues(fake *awsfake.Server) string {
	return "cloudConfig:\n" + indent(awsCloudConfig(fake.URL(), fake.Region, fake.VPCID(), ""), "  ") +
		"ccm:\n  controllers: [service-lb-controller, herald-class-controller, cloud-node, cloud-node-lifecycle]\n"
}

// TestChartAWS installs the chart with backend aws and the Node
// controllers, and runs herald-ccm from the installed Deployment under its
// ServiceAccount against herald's AWS fake: it initialises an uninitialised
// Node from EC2 (cloud-node), deletes the Node of a terminated instance
// (cloud-node-lifecycle), and gives a Service an NLB, with nothing refused
// by RBAC. The ClusterRole is exactly the aws rules: no claims, no pools.
func TestChartAWS(t *testing.T) {
	cluster.BinDirForTest(t)
	prefetchBinaries()
	fake := startFakeAWS(t)
	dir := t.TempDir()
	values := filepath.Join(dir, "aws-values.yaml")
	if err := os.WriteFile(values, []byte(awsChartValues(fake)), 0o600); err != nil {
		t.Fatal(err)
	}
	manifest := helm(t, "template", "herald", chartDir, "--namespace", chartNamespace,
		"--kube-version", "v1.37.2", "-f", values)
	rendered := filepath.Join(dir, "chart.yaml")
	if err := os.WriteFile(rendered, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	c := cluster.StartForTest(t, cluster.Options{})
	client := kubernetes.NewForConfigOrDie(c.Config)
	createNamespace(t, client, chartNamespace)
	kubectl(t, c, "apply", "--dry-run=server", "--validate=strict", "-f", rendered)
	kubectl(t, c, "apply", "-f", rendered)
	controllers := []string{"service-lb-controller", "herald-class-controller", "cloud-node", "cloud-node-lifecycle"}
	checkCCMRules(t, client, "herald-ccm", ccmRulesFor(backendAWS, controllers))
	checkUninitializedToleration(t, client)

	createAWSNodes(t, client, fake, "ready-1")
	createUninitializedNode(t, client, fake, "new-1")
	createAWSNodes(t, client, fake, "gone-1")
	fake.SetInstanceState("i-gone-1", "terminated")
	setNodeReady(t, client, "gone-1", v1.ConditionUnknown) // its kubelet went with it

	m := runChartCCM(t, c, client, awsEnv)
	defer m.requireNothingForbidden(t)
	createService(t, client, newService("default", "web", v1.ServiceTypeLoadBalancer, nil))
	waitForService(t, client, "default", "web", "has an NLB hostname", hasHostname)
	var last *v1.Node
	defer func() {
		if t.Failed() && last != nil {
			t.Logf("Node new-1: labels %v, taints %v, addresses %v", last.Labels, last.Spec.Taints, last.Status.Addresses)
		}
	}()
	waitFor(t, waitTimeout, "cloud-node initialises new-1 from EC2", func() bool {
		n, err := client.CoreV1().Nodes().Get(context.Background(), "new-1", metav1.GetOptions{})
		last = n
		// (The apiserver's admission adds node.kubernetes.io/not-ready to a
		// new Node; no node lifecycle controller runs here to lift it.)
		return err == nil && !slices.ContainsFunc(n.Spec.Taints, func(t v1.Taint) bool { return t.Key == uninitializedTaint }) && n.Labels[v1.LabelTopologyZone] == "eu-west-1a" &&
			slices.Contains(n.Status.Addresses, v1.NodeAddress{Type: v1.NodeInternalIP, Address: "10.0.0.7"})
	})
	waitFor(t, waitTimeout, "cloud-node-lifecycle deletes gone-1, whose instance is terminated", func() bool {
		_, err := client.CoreV1().Nodes().Get(context.Background(), "gone-1", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	m.requireRunning(t)
}

// checkUninitializedToleration: with cloud-node, herald-ccm must schedule on
// Nodes that wait for it.
func checkUninitializedToleration(t *testing.T, client kubernetes.Interface) {
	t.Helper()
	deploy, err := client.AppsV1().Deployments(chartNamespace).Get(context.Background(), "herald-ccm", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	taint := v1.Taint{Key: uninitializedTaint, Value: "true", Effect: v1.TaintEffectNoSchedule}
	if !slices.ContainsFunc(deploy.Spec.Template.Spec.Tolerations, func(tol v1.Toleration) bool {
		return tol.Key == taint.Key && tol.Effect == taint.Effect &&
			(tol.Operator == v1.TolerationOpExists || tol.Value == taint.Value)
	}) {
		t.Errorf("herald-ccm runs cloud-node but does not tolerate %s: on a new cluster no node could run it", taint.Key)
	}
}

// createUninitializedNode creates a Node as a kubelet with
// --cloud-provider=external does: the uninitialized taint, no provider ID
// yet, its EC2 private DNS name as its name.
func createUninitializedNode(t *testing.T, client kubernetes.Interface, fake *awsfake.Server, name string) {
	t.Helper()
	id := "i-" + name
	fake.AddInstance(awsfake.Instance{ID: id, Zone: "eu-west-1a", PrivateIP: "10.0.0.7", PrivateDNS: name})
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.NodeSpec{ProviderID: "aws:///eu-west-1a/" + id, Taints: []v1.Taint{
			{Key: uninitializedTaint, Value: "true", Effect: v1.TaintEffectNoSchedule}}}}
	if _, err := client.CoreV1().Nodes().Create(context.Background(), node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	setNodeReady(t, client, name, v1.ConditionTrue)
}

func setNodeReady(t *testing.T, client kubernetes.Interface, name string, status v1.ConditionStatus) {
	t.Helper()
	ctx := context.Background()
	node, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Heartbeats in the past, so a NotReady Node looks long gone.
	past := metav1.NewTime(time.Now().Add(-time.Hour))
	node.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: status,
		LastHeartbeatTime: past, LastTransitionTime: past, Reason: strings.ToLower(string(status))}}
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}
