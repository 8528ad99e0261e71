package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	baremetal "github.com/heraldlb/herald/bare-metal"
	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/provider"
	"github.com/heraldlb/herald/provider/service"
)

// An exhausted pool and a broken annotation are reported on the Services at
// fault; the CCM keeps running and keeps serving everyone else.
func TestBadRequestsAreReportedAndOthersKeepBeingServed(t *testing.T) {
	_, client, m := startLab(t, twoPools)
	createNamespace(t, client, "team")
	inSmall := map[string]string{service.AnnotationAddressPool: "small"}
	createService(t, client, newService("team", "holder", v1.ServiceTypeLoadBalancer, inSmall))
	waitForService(t, client, "team", "holder", "has an ingress IP", hasIngress)

	createService(t, client, newService("team", "starved", v1.ServiceTypeLoadBalancer, inSmall))
	message := waitForEvent(t, client, "team", "starved", v1.EventTypeWarning, baremetal.ReasonAllocationFailed)
	if !strings.Contains(message, "small") {
		t.Errorf("AllocationFailed message %q does not name the pool", message)
	}
	starved := waitForService(t, client, "team", "starved", "has a False condition", func(s *v1.Service) bool {
		c := meta.FindStatusCondition(s.Status.Conditions, baremetal.ConditionAddressAllocated)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == baremetal.ReasonAllocationFailed
	})
	if hasIngress(starved) {
		t.Errorf("starved service got ingress %v", starved.Status.LoadBalancer.Ingress)
	}

	broken := map[string]string{service.AnnotationLoadBalancerIPs: "198.51.100.10,not-an-ip"}
	createService(t, client, newService("team", "broken", v1.ServiceTypeLoadBalancer, broken))
	message = waitForEvent(t, client, "team", "broken", v1.EventTypeWarning, provider.ReasonInvalidAnnotation)
	if !strings.Contains(message, service.AnnotationLoadBalancerIPs) || !strings.Contains(message, "not-an-ip") {
		t.Errorf("InvalidAnnotation message %q does not name the annotation and value", message)
	}
	waitForService(t, client, "team", "broken", "has a False condition", func(s *v1.Service) bool {
		c := meta.FindStatusCondition(s.Status.Conditions, baremetal.ConditionAddressAllocated)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == provider.ReasonInvalidAnnotation
	})

	createService(t, client, newService("team", "healthy", v1.ServiceTypeLoadBalancer, nil))
	healthy := waitForService(t, client, "team", "healthy", "has an ingress IP", hasIngress)
	if ips := ingressIPs(healthy); !strings.HasPrefix(ips[0], "198.51.100.") {
		t.Errorf("healthy service got %v, want an address of pool main", ips)
	}
	holder, err := client.CoreV1().Services("team").Get(context.Background(), "holder", metav1.GetOptions{})
	if err != nil || !slices.Equal(ingressIPs(holder), []string{"198.51.100.200"}) {
		t.Errorf("holder lost its address: %v %v", err, holder)
	}
	m.requireRunning(t)
}

// A restarted CCM rebuilds its allocations from Service status: every one
// of 200 Services keeps its address, and neither a Service nor an address
// claim is written.
func TestRestartKeepsEveryAddress(t *testing.T) {
	pools := configWithPool("wide", "198.51.100.0/24")
	// The default client rate (20/s) would make allocating 200 Services,
	// five writes each, the slowest part of the suite; a CCM serving that
	// many Services is given more in practice too.
	rate := []string{"--kube-api-qps=100", "--kube-api-burst=200"}
	c := cluster.StartForTest(t, cluster.Options{})
	client := kubernetes.NewForConfigOrDie(c.Config)
	createNodes(t, client, "node-a", "node-b")
	m := startCCM(t, c, pools, rate...)
	createNamespace(t, client, "fleet")
	const services = 200
	began := time.Now()
	names := make([]string, services)
	for i := range names {
		names[i] = "svc-" + string(rune('a'+i/26)) + string(rune('a'+i%26))
		createService(t, client, newService("fleet", names[i], v1.ServiceTypeLoadBalancer, nil))
	}
	before := map[string]*v1.Service{}
	for _, name := range names {
		before[name] = waitForService(t, client, "fleet", name, "has an ingress IP", hasIngress)
	}
	t.Logf("%d Services created and given addresses in %v", services, time.Since(began).Round(time.Millisecond))
	allocatedBefore := countEvents(t, client, "fleet", baremetal.ReasonIPAllocated)
	claimsBefore := claimVersions(t, client)
	if len(claimsBefore) != services {
		t.Fatalf("%d address claims for %d Services", len(claimsBefore), services)
	}

	m.stop()
	restartedAt := time.Now()
	restarted := startCCM(t, c, pools, rate...)
	// The restarted CCM has synced every Service once it counts them all
	// ready; only then does nothing written mean nothing changed.
	restarted.waitServices(t, "service-lb-controller", services, 0)
	t.Logf("restarted CCM synced all %d Services %v after starting", services, time.Since(restartedAt).Round(time.Millisecond))
	createService(t, client, newService("fleet", "after-restart", v1.ServiceTypeLoadBalancer, nil))
	fresh := waitForService(t, client, "fleet", "after-restart", "has an ingress IP", hasIngress)

	list, err := client.CoreV1().Services("fleet").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, after := range list.Items {
		old, ok := before[after.Name]
		if !ok {
			continue
		}
		if after.ResourceVersion != old.ResourceVersion {
			t.Errorf("%s was written after the restart: status %+v -> %+v", after.Name, old.Status, after.Status)
		}
		if slices.Equal(ingressIPs(&after), ingressIPs(fresh)) {
			t.Errorf("%s and after-restart share %v", after.Name, ingressIPs(fresh))
		}
	}
	if got := countEvents(t, client, "fleet", baremetal.ReasonIPAllocated); got != allocatedBefore+1 {
		t.Errorf("IPAllocated events went from %d to %d, want only the new Service's", allocatedBefore, got)
	}
	claimsAfter := claimVersions(t, client)
	for ip, rv := range claimsBefore {
		if claimsAfter[ip] != rv {
			t.Errorf("the claim of %s changed after the restart: resourceVersion %s -> %q", ip, rv, claimsAfter[ip])
		}
	}
	restarted.requireRunning(t)
}

// claimVersions maps each address claim to its resourceVersion.
func claimVersions(t testing.TB, client kubernetes.Interface) map[string]string {
	t.Helper()
	list, err := client.NetworkingV1().IPAddresses().List(context.Background(), metav1.ListOptions{LabelSelector: claimSelector})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, obj := range list.Items {
		out[obj.Name] = obj.ResourceVersion
	}
	return out
}

func TestBrokenCloudConfigExitsNamingTheField(t *testing.T) {
	tests := []struct {
		name   string
		config string
		want   string
	}{
		{"bad range", "backend: bare-metal\nbareMetal:\n  pools:\n  - name: a\n    addresses: [\"198.51.100.9-198.51.100.1\"]\n",
			"bareMetal.pools[0].addresses[0]"},
		{"unknown field", "backend: bare-metal\nbareMetal:\n  pols: []\n", `unknown field "bareMetal.pols"`},
		{"unknown backend", "backend: gce\n", "backend"},
		{"pool without addresses", "backend: bare-metal\nbareMetal:\n  pools:\n  - name: a\n", "bareMetal.pools[0].addresses"},
		{"overlapping pools", "backend: bare-metal\nbareMetal:\n  pools:\n  - name: a\n    addresses: [\"198.51.100.0/28\"]\n  - name: b\n    addresses: [\"198.51.100.8/29\"]\n",
			"bareMetal.pools"},
	}
	binary := heraldBinary(t, "herald-ccm")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cloud.yaml")
			if err := os.WriteFile(path, []byte(tt.config), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(binary, "--cloud-provider=herald", "--cloud-config="+path,
				"--kubeconfig=/nonexistent").CombinedOutput()
			var exit *exec.ExitError
			if !errorsAs(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("herald-ccm exited with %v, want a non-zero exit\n%s", err, out)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Fatalf("output does not name %q:\n%s", tt.want, out)
			}
		})
	}
}

func TestHelpListsStandardCCMFlags(t *testing.T) {
	out, err := exec.Command(heraldBinary(t, "herald-ccm"), "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("herald-ccm --help: %v\n%s", err, out)
	}
	for _, flag := range []string{"--kubeconfig", "--cloud-provider", "--cloud-config", "--leader-elect",
		"--controllers", "--secure-port", "--cluster-name", "--concurrent-service-syncs"} {
		if !strings.Contains(string(out), flag) {
			t.Errorf("--help does not list %s", flag)
		}
	}
}

// herald-ccm --version prints the version stamped at build, without a
// cloud config.
func TestVersionIsStamped(t *testing.T) {
	out, err := exec.Command(heraldBinary(t, "herald-ccm"), "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("herald-ccm --version: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "v0.0.0-master") || !strings.Contains(string(out), " v0.") {
		t.Errorf("herald-ccm --version printed %q, want the version stamped at build", out)
	}
}
