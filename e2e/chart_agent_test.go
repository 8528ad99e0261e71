package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/heraldlb/herald/bare-metal/speaker"
	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/e2e/netlab"
	"github.com/heraldlb/herald/provider/agent"
)

// agentName is herald-agent's DaemonSet, ServiceAccount, ClusterRole and
// ClusterRoleBinding in release "herald" of chart "herald".
const agentName = "herald-agent"

// agentMode is which of herald-agent's jobs the chart turns on; nodeCIDR
// is agent.detectLocalMode=NodeCIDR (else the default, ClusterCIDR).
type agentMode struct{ forwarding, layer2, bgp, nodeCIDR bool }

func (m agentMode) String() string {
	var jobs []string
	for _, job := range []struct {
		on   bool
		name string
	}{{m.forwarding, "forwarding"}, {m.layer2, "layer2"}, {m.bgp, "bgp"}} {
		if job.on {
			jobs = append(jobs, job.name)
		}
	}
	name := strings.Join(jobs, "+")
	if len(jobs) == 1 {
		name += "-only"
	}
	if m.nodeCIDR {
		name += "+NodeCIDR"
	}
	return name
}

// detectLocalMode is the agent.detectLocalMode value of the mode.
func (m agentMode) detectLocalMode() string {
	if m.nodeCIDR {
		return "NodeCIDR"
	}
	return "ClusterCIDR"
}

// rules is exactly what herald-agent uses in the mode: informers (list,
// watch) on Services, EndpointSlices and Nodes for either job (Layer 2
// needs endpoints for externalTrafficPolicy: Local and the nodes'
// readiness); with forwarding the ServiceCIDRs (unallocated ClusterIPs
// are refused); with Layer 2 also IPAddressPools and L2Advertisements, the
// Announced condition (server-side apply on services/status) and Events;
// with BGP BGPPeers and BGPAdvertisements, their status (sessions per
// node, Valid), the BGPAdvertised condition and Events; forwarding with
// NodeCIDR records Events too (a Node without pod ranges). BGP's password
// Secrets are a Role of their own (bgpSecretRules).
func (m agentMode) rules() []rbacv1.PolicyRule {
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list", "watch"}},
	}
	announcing := m.layer2 || m.bgp
	if announcing {
		// Announcing reads its own Node once at start, for its addresses.
		rules[2].Verbs = []string{"get", "list", "watch"}
	}
	if m.forwarding {
		rules = append(rules,
			rbacv1.PolicyRule{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"servicecidrs"}, Verbs: []string{"list", "watch"}})
	}
	if announcing {
		watched := []string{"ipaddresspools"}
		if m.layer2 {
			watched = append(watched, "l2advertisements")
		}
		if m.bgp {
			watched = append(watched, "bgppeers", "bgpadvertisements")
		}
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{"herald.dev"}, Resources: watched, Verbs: []string{"list", "watch"}})
		if m.bgp {
			rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{"herald.dev"},
				Resources: []string{"bgppeers/status", "bgpadvertisements/status"}, Verbs: []string{"patch"}})
		}
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"services/status"}, Verbs: []string{"patch"}})
	}
	if announcing || (m.forwarding && m.nodeCIDR) {
		rules = append(rules,
			rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}})
	}
	return rules
}

// capabilities are what the mode needs: NET_ADMIN for nftables and
// conntrack (forwarding), NET_RAW for ARP/NDP packet sockets (Layer 2);
// BGP needs none without a listening port below 1024.
func (m agentMode) capabilities() []v1.Capability {
	var caps []v1.Capability
	if m.forwarding {
		caps = append(caps, "NET_ADMIN")
	}
	if m.layer2 {
		caps = append(caps, "NET_RAW")
	}
	return caps
}

// modeOf reads the mode back from the DaemonSet's args.
func modeOf(ctr v1.Container) agentMode {
	announces := func(protocol string) bool {
		return slices.ContainsFunc(ctr.Args, func(arg string) bool {
			protocols, ok := strings.CutPrefix(arg, "--announce=")
			return ok && slices.Contains(strings.Split(protocols, ","), protocol)
		})
	}
	return agentMode{forwarding: !slices.Contains(ctr.Args, "--forwarding=false"), layer2: announces("layer2"),
		bgp: announces("bgp"), nodeCIDR: slices.Contains(ctr.Args, "--detect-local-mode=NodeCIDR")}
}

// helmFails runs the pinned helm, which must fail, and returns its output.
func helmFails(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"run", helmPackage}, args...)...).CombinedOutput()
	if err == nil {
		t.Fatalf("helm %s succeeded; want an error", strings.Join(args, " "))
	}
	return string(out)
}

// renderedObject is what identifies one object of a rendered manifest.
type renderedObject struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
}

func renderedObjects(t testing.TB, manifest string) []renderedObject {
	t.Helper()
	var out []renderedObject
	dec := yaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	for {
		var o renderedObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("rendered manifest: %v", err)
		}
		if o.Kind != "" {
			out = append(out, o)
		}
	}
}

// checkAgentToggle checks that the agent is off by default (it replaces
// kube-proxy, so it is opt-in), that agent.enabled=false renders none of its
// objects even with the ci values, and that the schema refuses a typo under
// agent instead of ignoring it.
func checkAgentToggle(t *testing.T) {
	t.Helper()
	raw, err := os.ReadFile(chartDir + "/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Agent struct {
			Enabled *bool `json:"enabled"`
		} `json:"agent"`
	}
	if err := sigsyaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	if values.Agent.Enabled == nil || *values.Agent.Enabled {
		t.Errorf("values.yaml: agent.enabled = %v, want false (herald-agent must not run beside kube-proxy)", values.Agent.Enabled)
	}
	off := helm(t, "template", "herald", chartDir, "--namespace", chartNamespace,
		"--kube-version", "v1.37.2", "-f", ciValues, "--set", "agent.enabled=false")
	objects := renderedObjects(t, off)
	if len(objects) == 0 {
		t.Fatal("agent.enabled=false rendered nothing at all")
	}
	for _, o := range objects {
		if o.Kind == "DaemonSet" || o.Metadata.Labels["app.kubernetes.io/component"] == "agent" {
			t.Errorf("agent.enabled=false rendered %s %s", o.Kind, o.Metadata.Name)
		}
	}
	out := helmFails(t, "template", "herald", chartDir, "--kube-version", "v1.37.2",
		"-f", ciValues, "--set", "agent.enabeld=true")
	if !strings.Contains(out, "enabeld") {
		t.Errorf("helm refused agent.enabeld without naming it:\n%s", out)
	}
}

// checkAgentObjects reads the installed DaemonSet and RBAC and checks what
// the mode needs: the node's network, the mode's capabilities and nothing
// more, the node name and address from the downward API, probes on the
// health port, every node, one node at a time, and exactly the mode's RBAC
// rules.
func checkAgentObjects(t *testing.T, client kubernetes.Interface, mode agentMode) *appsv1.DaemonSet {
	t.Helper()
	ctx := context.Background()
	ds, err := client.AppsV1().DaemonSets(chartNamespace).Get(ctx, agentName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod := ds.Spec.Template.Spec
	if !pod.HostNetwork || pod.DNSPolicy != v1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork %v, dnsPolicy %s; want true, ClusterFirstWithHostNet", pod.HostNetwork, pod.DNSPolicy)
	}
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q, want system-node-critical", pod.PriorityClassName)
	}
	if want := []v1.Toleration{{Operator: v1.TolerationOpExists}}; !reflect.DeepEqual(pod.Tolerations, want) {
		t.Errorf("tolerations %+v, want %+v (every node)", pod.Tolerations, want)
	}
	if u := ds.Spec.UpdateStrategy; u.Type != appsv1.RollingUpdateDaemonSetStrategyType ||
		u.RollingUpdate == nil || u.RollingUpdate.MaxUnavailable.String() != "1" {
		t.Errorf("updateStrategy %+v, want RollingUpdate with maxUnavailable 1", u)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	ctr := pod.Containers[0]
	sc := ctr.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("herald-agent has no securityContext with capabilities")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("herald-agent is privileged; it needs only %v", mode.capabilities())
	}
	if got := modeOf(ctr); got != mode {
		t.Errorf("the DaemonSet's args %q run herald-agent in mode %s, want %s", ctr.Args, got, mode)
	}
	if !slices.Equal(sc.Capabilities.Add, mode.capabilities()) ||
		!reflect.DeepEqual(sc.Capabilities.Drop, []v1.Capability{"ALL"}) {
		t.Errorf("capabilities %+v, want add %v, drop [ALL]", sc.Capabilities, mode.capabilities())
	}
	if !slices.Contains(ctr.Args, "--node-name=$(NODE_NAME)") {
		t.Errorf("args %q do not pass --node-name=$(NODE_NAME)", ctr.Args)
	}
	if !slices.ContainsFunc(ctr.Env, func(e v1.EnvVar) bool {
		return e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}) {
		t.Errorf("env %+v has no NODE_NAME from spec.nodeName", ctr.Env)
	}
	healthPort := bindPort(t, ctr.Args, "--health-bind-address")
	for _, p := range []struct {
		probe *v1.Probe
		path  string
	}{{ctr.ReadinessProbe, "/readyz"}, {ctr.LivenessProbe, "/livez"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path ||
			containerPort(t, ctr, p.probe.HTTPGet.Port.String()) != healthPort {
			t.Errorf("probe %+v: want GET %s on the --health-bind-address port %d", p.probe, p.path, healthPort)
		}
	}
	if got, want := containerPort(t, ctr, "metrics"), bindPort(t, ctr.Args, "--metrics-bind-address"); got != want {
		t.Errorf("container port metrics is %d, --metrics-bind-address's port %d", got, want)
	}
	checkAgentRBAC(t, client, pod.ServiceAccountName, mode.rules())
	checkBGPSecretRole(t, client, mode)
	return ds
}

func checkAgentRBAC(t *testing.T, client kubernetes.Interface, serviceAccount string, agentRules []rbacv1.PolicyRule) {
	t.Helper()
	ctx := context.Background()
	if _, err := client.CoreV1().ServiceAccounts(chartNamespace).Get(ctx, serviceAccount, metav1.GetOptions{}); err != nil {
		t.Errorf("the DaemonSet's ServiceAccount: %v", err)
	}
	role, err := client.RbacV1().ClusterRoles().Get(ctx, agentName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(role.Rules, agentRules) {
		t.Errorf("ClusterRole %s grants\n%+v\nwant exactly\n%+v", agentName, role.Rules, agentRules)
	}
	binding, err := client.RbacV1().ClusterRoleBindings().Get(ctx, agentName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantSubjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: serviceAccount, Namespace: chartNamespace}}
	if binding.RoleRef.Kind != "ClusterRole" || binding.RoleRef.Name != agentName ||
		!reflect.DeepEqual(binding.Subjects, wantSubjects) {
		t.Errorf("ClusterRoleBinding %s: roleRef %+v, subjects %+v; want ClusterRole %s for %+v",
			agentName, binding.RoleRef, binding.Subjects, agentName, wantSubjects)
	}
}

// bindPort is the port of a host:port flag in args.
func bindPort(t testing.TB, args []string, flag string) int32 {
	t.Helper()
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			_, port, err := net.SplitHostPort(v)
			if err != nil {
				t.Fatalf("%s: %v", a, err)
			}
			n, err := strconv.ParseInt(port, 10, 32)
			if err != nil {
				t.Fatalf("%s: %v", a, err)
			}
			return int32(n)
		}
	}
	t.Fatalf("args %q have no %s", args, flag)
	return 0
}

// containerPort resolves a probe's port, a number or a port name.
func containerPort(t testing.TB, ctr v1.Container, port string) int32 {
	t.Helper()
	if n, err := strconv.ParseInt(port, 10, 32); err == nil {
		return int32(n)
	}
	for _, p := range ctr.Ports {
		if p.Name == port {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %q", ctr.Name, port)
	return 0
}

// runChartAgent runs herald-agent as the installed DaemonSet would on node
// nodeName: the container's args with $(VAR)s expanded as the kubelet does,
// a token of its ServiceAccount, in a network namespace of its own (the
// pod's host network). The kubelet's probes must pass and no request may
// be refused (the ClusterRole suffices). With forwarding, the node's table
// must hold the Service's ClusterIP, and the uninstall story holds: the
// table outlives the agent, and herald-agent --cleanup removes it; without
// it, the agent must leave nftables alone (kube-proxy's job). With Layer 2,
// the node announces the Service and says so in its condition.
func runChartAgent(t *testing.T, c *cluster.Cluster, client kubernetes.Interface, ds *appsv1.DaemonSet,
	mode agentMode, nodeName string, nodeIP netip.Addr, clusterIP string) {
	t.Helper()
	netlab.SkipUnlessAble(t)
	lab := netlab.New(t)
	node := lab.AddNode(nodeName, nodeIP)
	lab.Forward(node.Netns, strings.TrimPrefix(c.Config.Host, "https://"))

	pod := ds.Spec.Template.Spec
	ctr := pod.Containers[0]
	dir := t.TempDir()
	args := append(mountSecrets(t, client, pod, expandArgs(t, ctr, nodeName, nodeIP), dir),
		"--kubeconfig="+serviceAccountKubeconfig(t, c, client, pod.ServiceAccountName, dir))
	logPath := filepath.Join(dir, "herald-agent.log")
	bin := heraldBinary(t, "herald-agent")
	p, err := node.Start("herald-agent", logPath, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	lab.OnCleanup(func() { p.Stop(5 * time.Second) })
	defer requireNothingForbidden(t, "herald-agent", logPath)
	// Now, not at cleanup: the log's temporary folder goes first.
	defer func() {
		if t.Failed() {
			t.Logf("herald-agent log (tail):\n%s", p.LogTail(40))
		}
	}()

	// The kubelet probes a hostNetwork pod at its IP, the node's.
	for _, probe := range []*v1.Probe{ctr.ReadinessProbe, ctr.LivenessProbe} {
		url := fmt.Sprintf("http://%s%s", net.JoinHostPort(nodeIP.String(),
			strconv.Itoa(int(containerPort(t, ctr, probe.HTTPGet.Port.String())))), probe.HTTPGet.Path)
		waitHTTPOK(t, node.Netns, url, p)
	}
	if mode.layer2 {
		// With an advertisement for the ci values' pool, the only node
		// announces the Service and says so.
		createL2Advertisement(t, dynamic.NewForConfigOrDie(c.Config).Resource(adGVR), "chart", map[string]any{"ipAddressPools": []any{"default"}})
		waitForService(t, client, "default", "web", "is announced by "+nodeName, func(s *v1.Service) bool {
			cond := meta.FindStatusCondition(s.Status.Conditions, speaker.ConditionAnnounced)
			return cond != nil && cond.Status == metav1.ConditionTrue && strings.Contains(cond.Message, "node "+nodeName+" ")
		})
	}
	if mode.bgp {
		checkChartBGP(t, c, client, nodeName)
	}
	if !mode.forwarding {
		if out, err := node.Run("nft", "list", "table", "inet", "herald"); err == nil {
			t.Errorf("with forwarding off, herald-agent made the table anyway (kube-proxy forwards there):\n%s", out)
		}
		return
	}
	table, err := node.Run("nft", "list", "table", "inet", "herald")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table, clusterIP) {
		t.Errorf("the table has no element for ClusterIP %s:\n%s", clusterIP, table)
	}
	if mode.nodeCIDR {
		// The Node has no pod ranges: the agent says so on it, which
		// the ClusterRole must allow.
		waitNodeEvent(t, client, nodeName, agent.ReasonNoPodCIDRs)
	}

	p.Stop(5 * time.Second)
	if _, err := node.Run("nft", "list", "table", "inet", "herald"); err != nil {
		t.Errorf("the table went with the agent; it must stay so that traffic flows across restarts: %v", err)
	}
	if out, err := node.Run(bin, "--cleanup"); err != nil {
		t.Fatalf("herald-agent --cleanup: %v\n%s", err, out)
	}
	if out, err := node.Run("nft", "list", "table", "inet", "herald"); err == nil {
		t.Errorf("herald-agent --cleanup left the table:\n%s", out)
	}
}

// expandArgs expands $(VAR) in the container's args from its env, as the
// kubelet does; spec.nodeName and status.hostIP are the field references
// resolved.
func expandArgs(t testing.TB, ctr v1.Container, nodeName string, nodeIP netip.Addr) []string {
	t.Helper()
	args := slices.Clone(ctr.Args)
	fields := map[string]string{"spec.nodeName": nodeName, "status.hostIP": nodeIP.String()}
	for _, e := range ctr.Env {
		value := e.Value
		if e.ValueFrom != nil {
			if e.ValueFrom.FieldRef == nil || fields[e.ValueFrom.FieldRef.FieldPath] == "" {
				continue
			}
			value = fields[e.ValueFrom.FieldRef.FieldPath]
		}
		for i := range args {
			args[i] = strings.ReplaceAll(args[i], "$("+e.Name+")", value)
		}
	}
	for _, a := range args {
		if strings.Contains(a, "$(") {
			t.Fatalf("arg %q refers to a variable the pod does not define", a)
		}
	}
	return args
}

// mountSecrets writes the keys of the pod's Secret volumes into dir, as the
// kubelet would mount them, and points the args at them.
func mountSecrets(t testing.TB, client kubernetes.Interface, pod v1.PodSpec, args []string, dir string) []string {
	t.Helper()
	for _, vol := range pod.Volumes {
		if vol.Secret == nil {
			continue
		}
		secret, err := client.CoreV1().Secrets(chartNamespace).Get(context.Background(), vol.Secret.SecretName, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the agent's Secret volume %s: %v", vol.Name, err)
		}
		mountDir := filepath.Join(dir, vol.Name)
		if err := os.MkdirAll(mountDir, 0o700); err != nil {
			t.Fatal(err)
		}
		for key, data := range secret.Data {
			if err := os.WriteFile(filepath.Join(mountDir, key), data, 0o400); err != nil {
				t.Fatal(err)
			}
		}
		mount := volumeMountPath(t, pod.Containers[0], vol.Name)
		for i := range args {
			args[i] = strings.ReplaceAll(args[i], mount+"/", mountDir+"/")
		}
	}
	return args
}

// waitHTTPOK polls url from inside ns until it answers 200, failing early
// if the process exits.
func waitHTTPOK(t testing.TB, ns *netlab.Netns, url string, p *cluster.Process) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, waitTimeout, true,
		func(context.Context) (bool, error) {
			if err := p.ExitedErr(); err != nil {
				return false, err
			}
			code, err := getStatus(ns, url)
			last = fmt.Sprintf("status %d, error %v", code, err)
			return err == nil && code == http.StatusOK, nil
		})
	if err != nil {
		t.Fatalf("GET %s: %v (last: %s)", url, err, last)
	}
}
