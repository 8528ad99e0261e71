package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/heraldlb/herald/e2e/cluster"
)

const (
	// helm comes from the Go module proxy like every other tool here; go run
	// caches the built binary, so only the first run on a machine compiles it.
	// v3.21.4 is the newest v3 approved for this project (v3.22.0 is served
	// but not approved); e2e/kind/kind.sh and the chart README name it too.
	helmPackage = "helm.sh/helm/v3/cmd/helm@v3.21.4"
	chartDir    = "../charts/herald"
	// ciValues is the configuration the chart is checked with: a dual-stack
	// pool and a manual one.
	ciValues       = chartDir + "/ci/bare-metal-values.yaml"
	chartNamespace = "herald-system"
)

// helm runs the pinned helm and returns its standard output.
func helm(t testing.TB, args ...string) string {
	t.Helper()
	t.Logf("go run %s %s (compiles helm on a cold build cache: minutes)", helmPackage, strings.Join(args, " "))
	var stderr strings.Builder
	cmd := exec.Command("go", append([]string{"run", helmPackage}, args...)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// TestChart checks charts/herald the way an admin meets it: lint, render
// with the ci values, validate every rendered object strictly against the
// real apiserver, install it, and run herald-ccm exactly as the chart's
// Deployment would (its args, its cloud config, its ServiceAccount). That
// last step proves the chart's RBAC is enough: herald-ccm wins the lease
// and gives a Service an address, and nothing is forbidden on the way.
// herald-agent is checked the same way in each of its modes (forwarding
// and Layer 2, forwarding alone for a cluster without kube-proxy that
// announces nothing, Layer 2 alone beside kube-proxy): its DaemonSet and
// RBAC as installed, then (as root) the real binary with the DaemonSet's
// args and ServiceAccount on a node of its own.
func TestChart(t *testing.T) {
	// Before helm, which compiles for minutes on a cold cache: without the
	// Kubernetes binaries the test cannot finish anyway.
	cluster.BinDirForTest(t)
	prefetchBinaries()
	helm(t, "lint", "--strict", chartDir)
	helm(t, "lint", "--strict", chartDir, "-f", ciValues)
	checkAgentToggle(t)
	// Forwarding alone runs in mode NodeCIDR, whose only extra need (Events)
	// the other modes do not show.
	for _, mode := range []agentMode{{forwarding: true, layer2: true}, {forwarding: true, nodeCIDR: true}, {layer2: true}} {
		t.Run(mode.String(), func(t *testing.T) { checkChartInstall(t, mode) })
	}
}

// checkChartInstall installs the chart with the ci values and herald-agent
// in mode, runs herald-ccm and herald-agent from what is installed, and
// checks that a Service gets an address, forwarded and announced as the
// mode says, with nothing refused by RBAC.
func checkChartInstall(t *testing.T, mode agentMode) {
	rendered := filepath.Join(t.TempDir(), "chart.yaml")
	manifest := helm(t, "template", "herald", chartDir, "--namespace", chartNamespace,
		"--kube-version", "v1.37.2", "--include-crds", "-f", ciValues,
		"--set", fmt.Sprintf("agent.forwarding=%t,agent.layer2.enabled=%t,agent.detectLocalMode=%s",
			mode.forwarding, mode.layer2, mode.detectLocalMode()))
	if err := os.WriteFile(rendered, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}

	c := cluster.StartForTest(t, cluster.Options{})
	client := kubernetes.NewForConfigOrDie(c.Config)
	createNamespace(t, client, chartNamespace)
	// Strict: an unknown or misplaced field anywhere in a template fails.
	t.Logf("server-side dry run:\n%s", kubectl(t, c, "apply", "--dry-run=server", "--validate=strict", "-f", rendered))
	kubectl(t, c, "apply", "-f", rendered)
	ds := checkAgentObjects(t, client, mode)
	checkCCMRules(t, client, "herald-ccm", ccmRulesFor(backendBareMetal, defaultControllers))

	m := runChartCCM(t, c, client, nil)
	// Deferred, so that a refusal is named even when a wait below fails.
	defer m.requireNothingForbidden(t)
	createNodes(t, client, "node-a")
	createService(t, client, newService("default", "web", v1.ServiceTypeLoadBalancer, nil))
	svc := waitForService(t, client, "default", "web", "has an ingress IP", hasIngress)
	m.requireRunning(t)
	pool := netip.MustParsePrefix("192.0.2.0/28") // pool "default" in the ci values
	for _, ip := range ingressIPs(svc) {
		if !pool.Contains(netip.MustParseAddr(ip)) {
			t.Errorf("Service web got %s, outside pool default %s", ip, pool)
		}
	}
	lease, err := client.CoordinationV1().Leases(chartNamespace).Get(context.Background(), m.lease, metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
		t.Errorf("lease %s/%s not held: %v", chartNamespace, m.lease, err)
	}
	t.Run("agent", func(t *testing.T) {
		// node-a's InternalIP, as createNodes gives it.
		runChartAgent(t, c, client, ds, mode, "node-a", netip.MustParseAddr("192.0.2.11"), svc.Spec.ClusterIP)
	})
}

// chartCCM is herald-ccm started from the installed chart.
type chartCCM struct {
	*ccm
	logPath string
	lease   string
	// args are the ones it runs with, the Deployment's among them.
	args []string
}

// runChartCCM reads the installed Deployment and starts herald-ccm here
// with env added to its environment, its container's args, the files its ConfigMap volume would mount,
// and a token of its ServiceAccount. Only what a pod gets from its
// environment is added: where the apiserver is, and a free port to serve on
// (the delegated authentication and authorization of that endpoint need
// the chart's auth-delegator binding and the kube-system Role).
func runChartCCM(t testing.TB, c *cluster.Cluster, client kubernetes.Interface, env []string) *chartCCM {
	t.Helper()
	ctx := context.Background()
	// Release "herald" of chart "herald": the Deployment is herald-ccm.
	deploy, err := client.AppsV1().Deployments(chartNamespace).Get(ctx, "herald-ccm", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod := deploy.Spec.Template.Spec
	dir := t.TempDir()
	args := pod.Containers[0].Args
	for _, vol := range pod.Volumes {
		if vol.ConfigMap == nil {
			continue
		}
		cm, err := client.CoreV1().ConfigMaps(chartNamespace).Get(ctx, vol.ConfigMap.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mount := volumeMountPath(t, pod.Containers[0], vol.Name)
		for key, data := range cm.Data {
			if err := os.WriteFile(filepath.Join(dir, key), []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		for i := range args { // the pod's paths, here
			args[i] = strings.ReplaceAll(args[i], mount+"/", dir+"/")
		}
	}
	kubeconfigPath := serviceAccountKubeconfig(t, c, client, pod.ServiceAccountName, dir)
	args = append(args, "--kubeconfig="+kubeconfigPath, "--authentication-kubeconfig="+kubeconfigPath,
		"--authorization-kubeconfig="+kubeconfigPath, "--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(cluster.FreePort(t)))

	logPath := filepath.Join(dir, "herald-ccm.log")
	bin := heraldBinary(t, "herald-ccm")
	if len(env) > 0 { // env(1) execs herald-ccm, so the PID stays its own
		args = append(append(slices.Clone(env), bin), args...)
		bin = "/usr/bin/env"
	}
	p, err := cluster.StartProcess("herald-ccm", logPath, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	p.StopAtCleanup(t, 60)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("herald-ccm log (tail):\n%s", p.LogTail(40))
		}
	})
	m := &chartCCM{ccm: &ccm{Process: p}, logPath: logPath, args: args}
	for _, arg := range args {
		if name, ok := strings.CutPrefix(arg, "--leader-elect-resource-name="); ok {
			m.lease = name
		}
	}
	if m.lease == "" {
		t.Fatalf("the chart's args %q name no lease", args)
	}
	return m
}

// serviceAccountKubeconfig writes, into dir, a kubeconfig that reaches c
// with a token of the ServiceAccount, the identity a pod of it would have.
func serviceAccountKubeconfig(t testing.TB, c *cluster.Cluster, client kubernetes.Interface, serviceAccount, dir string) string {
	t.Helper()
	token, err := client.CoreV1().ServiceAccounts(chartNamespace).CreateToken(context.Background(), serviceAccount,
		&authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := clientcmdapi.NewConfig()
	kubeconfig.Clusters["c"] = &clientcmdapi.Cluster{Server: c.Config.Host, CertificateAuthorityData: c.Config.CAData}
	kubeconfig.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Token: token.Status.Token}
	kubeconfig.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "sa"}
	kubeconfig.CurrentContext = "c"
	path := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kubeconfig, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// requireNothingForbidden fails t for every refusal in herald-ccm's log:
// some are only logged and retried (informers, leader election), so the
// other checks alone could pass with a narrower role than intended.
func (m *chartCCM) requireNothingForbidden(t testing.TB) {
	t.Helper()
	requireNothingForbidden(t, "herald-ccm", m.logPath)
}

// requireNothingForbidden fails t for every refusal in the log of a
// component started with the chart's ServiceAccount and RBAC.
func requireNothingForbidden(t testing.TB, name, logPath string) {
	t.Helper()
	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(log)) {
		if strings.Contains(strings.ToLower(line), "forbidden") {
			t.Errorf("RBAC refused %s something: %s", name, line)
		}
	}
}

func volumeMountPath(t testing.TB, container v1.Container, volume string) string {
	t.Helper()
	for _, mount := range container.VolumeMounts {
		if mount.Name == volume {
			return mount.MountPath
		}
	}
	t.Fatalf("volume %s is not mounted in %s", volume, container.Name)
	return ""
}
