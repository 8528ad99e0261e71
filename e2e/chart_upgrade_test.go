package e2e

import (
	"context"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/bare-metal/claims"
	"github.com/heraldlb/herald/e2e/cluster"
)

// upgradeValues change what an upgrade can: herald-ccm's flags, a pool
// added ahead of all others (priority 1 among auto-assigned pools), the
// agent's verbosity.
const upgradeValues = `ccm:
  logLevel: 4
cloudConfig:
  backend: bare-metal
  bareMetal:
    pools:
      - name: first
        addresses: ["198.51.100.100-198.51.100.110"]
        priority: 1
      - name: default
        addresses: ["192.0.2.0/28", "2001:db8::/120"]
      - name: manual
        addresses: ["198.51.100.10-198.51.100.20"]
        autoAssign: false
        avoidBuggyIPs: true
        priority: 1
agent:
  logLevel: 4
`

// heraldClaims maps herald's IPAddress claims to their UIDs: a claim
// deleted and made again has the same name and a new UID.
func heraldClaims(t testing.TB, client kubernetes.Interface) map[string]types.UID {
	t.Helper()
	list, err := client.NetworkingV1().IPAddresses().List(context.Background(), metav1.ListOptions{
		LabelSelector: networkingv1.LabelManagedBy + "=" + claims.Manager})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]types.UID{}
	for _, ip := range list.Items {
		out[ip.Name] = ip.UID
	}
	return out
}

// TestChartUpgradeAndUninstall installs the chart with helm on the real
// apiserver, gives Services addresses through herald-ccm run from the
// installed Deployment, upgrades the release with changed values (a new
// pool tried first, other flags) and runs the new Deployment's herald-ccm
// as the rollout would: no Service changes address, no claim is remade,
// the agents' membership key stays, and a new Service gets its address
// from the new pool. Then the uninstall as the chart README tells it.
func TestChartUpgradeAndUninstall(t *testing.T) {
	cluster.BinDirForTest(t)
	prefetchBinaries()
	c := cluster.StartForTest(t, cluster.Options{})
	client := kubernetes.NewForConfigOrDie(c.Config)
	kc := "--kubeconfig=" + c.Kubeconfig
	notes := helm(t, "install", "herald", chartDir, kc, "--namespace", chartNamespace, "--create-namespace", "-f", ciValues)
	for _, want := range []string{"L2Advertisement", "helm uninstall", "remove kube-proxy"} {
		if !strings.Contains(notes, want) {
			t.Errorf("helm install's notes do not mention %q:\n%s", want, notes)
		}
	}
	key := memberlistKey(t, client)

	m := runChartCCM(t, c, client, nil)
	createNodes(t, client, "node-a")
	names := []string{"web", "manual", "dual"}
	for _, svc := range []*v1.Service{
		newService("default", "web", v1.ServiceTypeLoadBalancer, nil),
		newService("default", "manual", v1.ServiceTypeLoadBalancer, map[string]string{"herald.dev/address-pool": "manual"}),
		dualStack(newService("default", "dual", v1.ServiceTypeLoadBalancer, nil)),
	} {
		createService(t, client, svc)
	}
	before := map[string][]string{}
	for _, name := range names {
		before[name] = ingressIPs(waitForService(t, client, "default", name, "has an address", hasIngress))
	}
	claimsBefore := heraldClaims(t, client)
	if len(claimsBefore) != 4 {
		t.Fatalf("claims %v, want one per address of %v", claimsBefore, before)
	}
	m.requireNothingForbidden(t)

	values := filepath.Join(t.TempDir(), "upgrade.yaml")
	if err := os.WriteFile(values, []byte(upgradeValues), 0o600); err != nil {
		t.Fatal(err)
	}
	helm(t, "upgrade", "herald", chartDir, kc, "--namespace", chartNamespace, "-f", ciValues, "-f", values)
	// The rollout: the old pod stops, the new one starts with the new
	// Deployment's args and ConfigMap.
	m.stop()
	m = runChartCCM(t, c, client, nil)
	defer m.requireNothingForbidden(t)
	if !slices.Contains(m.args, "--v=4") {
		t.Fatalf("the upgraded Deployment's args %q lack --v=4: the upgrade did not take", m.args)
	}
	createService(t, client, newService("default", "after", v1.ServiceTypeLoadBalancer, nil))
	after := ingressIPs(waitForService(t, client, "default", "after", "has an address", hasIngress))
	lo, hi := netip.MustParseAddr("198.51.100.100"), netip.MustParseAddr("198.51.100.110")
	if len(after) != 1 || netip.MustParseAddr(after[0]).Compare(lo) < 0 || netip.MustParseAddr(after[0]).Compare(hi) > 0 {
		t.Errorf("a Service created after the upgrade got %v, want an address of the new pool %s-%s, tried first", after, lo, hi)
	}
	for _, name := range names {
		svc, err := client.CoreV1().Services("default").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := ingressIPs(svc); !slices.Equal(got, before[name]) {
			t.Errorf("Service %s: %v after the upgrade, %v before", name, got, before[name])
		}
	}
	now := heraldClaims(t, client)
	for name, uid := range claimsBefore {
		if now[name] != uid {
			t.Errorf("claim %s: UID %q after the upgrade, %q before: it was remade", name, now[name], uid)
		}
	}
	if got := memberlistKey(t, client); got != key {
		t.Error("the upgrade changed the agents' membership key: agents of two versions could not talk during the rollout")
	}

	checkUninstall(t, c, client, m, append(names, "after"))
}

// checkUninstall follows the chart README: delete the LoadBalancer Services
// while herald-ccm runs (it releases their addresses and finalizers), then
// helm uninstall. Nothing of herald's may remain but the CRDs, which helm
// never deletes. A Service left behind and deleted afterwards hangs on its
// finalizer and keeps its claim; the README's commands for that case must
// clear both.
func checkUninstall(t *testing.T, c *cluster.Cluster, client kubernetes.Interface, m *chartCCM, names []string) {
	t.Helper()
	ctx := context.Background()
	leftBehind := names[0]
	for _, name := range names[1:] {
		if err := client.CoreV1().Services("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitForServiceAbsent(t, client, "default", name)
	}
	m.stop() // the Deployment's pods go first with helm uninstall
	helm(t, "uninstall", "herald", "--kubeconfig="+c.Kubeconfig, "--namespace", chartNamespace)
	// Deleting the Service now leaves it terminating: nobody removes the
	// finalizer herald-ccm put there, and its claim stays.
	if err := client.CoreV1().Services("default").Delete(ctx, leftBehind, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err := client.CoreV1().Services("default").Get(ctx, leftBehind, metav1.GetOptions{})
	if err != nil || svc.DeletionTimestamp == nil || len(heraldClaims(t, client)) == 0 {
		t.Fatalf("a Service left at uninstall and then deleted: %v, finalizers %v, claims %v; the README says it stays terminating with its claim",
			err, svc.Finalizers, heraldClaims(t, client))
	}
	runReadmeCommands(t, c, "uninstall-leftovers")
	waitForServiceAbsent(t, client, "default", leftBehind)
	if left := heraldClaims(t, client); len(left) != 0 {
		t.Errorf("claims left after the README's clean-up: %v", slices.Collect(maps.Keys(left)))
	}
	roles, err := client.RbacV1().ClusterRoles().List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=herald"})
	if err != nil {
		t.Fatal(err)
	}
	if len(roles.Items) != 0 {
		t.Errorf("helm uninstall left %d ClusterRoles", len(roles.Items))
	}
}

// runReadmeCommands runs the ```sh block after <!-- marker --> in the chart
// README with bash, the built kubectl first in PATH and KUBECONFIG set, as
// an admin would paste it.
func runReadmeCommands(t *testing.T, c *cluster.Cluster, marker string) {
	t.Helper()
	readme, err := os.ReadFile(chartDir + "/README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "<!-- "+marker+" -->")
	if !ok {
		t.Fatalf("the chart README has no <!-- %s --> marker", marker)
	}
	_, rest, _ = strings.Cut(rest, "```sh\n")
	script, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatalf("the chart README's %s commands are not in a ```sh block", marker)
	}
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Env = append(os.Environ(), "PATH="+c.BinDir+":"+os.Getenv("PATH"), "KUBECONFIG="+c.Kubeconfig)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the chart README's %s commands failed: %v\n%s\n%s", marker, err, script, out)
	}
	t.Logf("%s:\n%s", marker, out)
}

func memberlistKey(t testing.TB, client kubernetes.Interface) string {
	t.Helper()
	s, err := client.CoreV1().Secrets(chartNamespace).Get(context.Background(), agentName+"-memberlist", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Data["key"]) != 32 {
		t.Fatalf("membership key of %d bytes, want 32", len(s.Data["key"]))
	}
	return string(s.Data["key"])
}

func dualStack(svc *v1.Service) *v1.Service {
	policy := v1.IPFamilyPolicyRequireDualStack
	svc.Spec.IPFamilyPolicy = &policy
	return svc
}
