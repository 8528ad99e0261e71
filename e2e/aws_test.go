package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	awsbackend "github.com/heraldlb/herald/aws"
	"github.com/heraldlb/herald/aws/awsfake"
	"github.com/heraldlb/herald/aws/build"
	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/provider"
)

func startAWSLab(t *testing.T, extraConfig string, ccmArgs []string, nodes ...string) (*cluster.Cluster, kubernetes.Interface, *awsfake.Server, *ccm) {
	t.Helper()
	prefetchBinaries()
	c := cluster.StartForTest(t, cluster.Options{})
	client := kubernetes.NewForConfigOrDie(c.Config)
	fake := startFakeAWS(t)
	createAWSNodes(t, client, fake, nodes...)
	m := startAWSCCM(t, c, awsCloudConfig(fake.URL(), fake.Region, fake.VPCID(), extraConfig), ccmArgs...)
	return c, client, fake, m
}

func updateService(t *testing.T, client kubernetes.Interface, namespace, name string, mutate func(*v1.Service)) {
	t.Helper()
	svc, err := client.CoreV1().Services(namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mutate(svc)
	if _, err := client.CoreV1().Services(namespace).Update(context.Background(), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func targetsOf(fake *awsfake.Server, key string) []string {
	var all []string
	for _, tg := range stackIn(fake, key)["targetgroup"] {
		_, name, _ := strings.Cut(tg.ID, ":targetgroup/")
		name, _, _ = strings.Cut(name, "/")
		all = append(all, strings.Join(fake.Targets(name), ","))
	}
	return all
}

func TestAWSCreateUpdateDelete(t *testing.T) {
	_, client, fake, m := startAWSLab(t, "", nil, "node-a", "node-b")
	createNamespace(t, client, "web")
	createService(t, client, newService("web", "front", v1.ServiceTypeLoadBalancer, nil))
	svc := waitForService(t, client, "web", "front", "has an NLB hostname", hasHostname)
	stack := stackIn(fake, "web/front")
	if len(stack["loadbalancer"]) != 1 || len(stack["targetgroup"]) != 1 || len(stack["securitygroup"]) != 1 {
		t.Fatalf("stack after create: %+v", stack)
	}
	if !strings.Contains(stack["loadbalancer"][0].ID, ":loadbalancer/net/") {
		t.Errorf("ARN %s", stack["loadbalancer"][0].ID)
	}
	if got := targetsOf(fake, "web/front"); !slices.Equal(got, []string{"i-node-a,i-node-b"}) {
		t.Errorf("targets = %v", got)
	}
	condition := meta.FindStatusCondition(svc.Status.Conditions, awsbackend.ConditionLoadBalancerReady)
	if condition == nil || condition.Status != metav1.ConditionTrue {
		t.Errorf("condition = %+v", condition)
	}

	// Ports: a second port gets its listener and target group.
	updateService(t, client, "web", "front", func(s *v1.Service) {
		s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53})
	})
	waitFor(t, waitTimeout, "a target group per port", func() bool { return len(stackIn(fake, "web/front")["targetgroup"]) == 2 })
	// Nodes: a new node becomes a target of every group.
	createAWSNodes(t, client, fake, "node-c")
	waitFor(t, waitTimeout, "node-c registered everywhere", func() bool {
		return slices.Equal(targetsOf(fake, "web/front"), []string{"i-node-a,i-node-b,i-node-c", "i-node-a,i-node-b,i-node-c"})
	})
	// Annotations: extra tags reach the load balancer.
	updateService(t, client, "web", "front", func(s *v1.Service) {
		s.Annotations = map[string]string{build.AnnotationAdditionalTags: "team=web"}
	})
	// The target groups too, not only the load balancer: they are tagged
	// after it, and the no-write check below must not count those calls.
	waitFor(t, waitTimeout, "the load balancer and both target groups tagged team=web", func() bool {
		stack := stackIn(fake, "web/front")
		tagged := slices.Concat(stack["loadbalancer"], stack["targetgroup"])
		return len(stack["loadbalancer"]) == 1 && len(stack["targetgroup"]) == 2 &&
			!slices.ContainsFunc(tagged, func(r awsfake.Resource) bool { return r.Tags["team"] != "web" })
	})
	// An invalid annotation: Warning, False condition, and no AWS write.
	writes := fake.MutatingCalls()
	updateService(t, client, "web", "front", func(s *v1.Service) {
		s.Annotations[build.AnnotationScheme] = "public"
		s.Annotations["service.beta.kubernetes.io/aws-load-balancer-backend-protocol"] = "http"
	})
	message := waitForEvent(t, client, "web", "front", v1.EventTypeWarning, provider.ReasonInvalidAnnotation)
	if !strings.Contains(message, build.AnnotationScheme) {
		t.Errorf("event %q does not name the annotation", message)
	}
	waitForService(t, client, "web", "front", "condition False naming the annotation", func(s *v1.Service) bool {
		c := meta.FindStatusCondition(s.Status.Conditions, awsbackend.ConditionLoadBalancerReady)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, build.AnnotationScheme)
	})
	if n := fake.MutatingCalls(); n != writes {
		t.Errorf("an invalid annotation caused %d AWS writes", n-writes)
	}
	updateService(t, client, "web", "front", func(s *v1.Service) { delete(s.Annotations, build.AnnotationScheme) })
	message = waitForEvent(t, client, "web", "front", v1.EventTypeWarning, awsbackend.ReasonUnknownAnnotation)
	if !strings.Contains(message, "aws-load-balancer-backend-protocol") {
		t.Errorf("event %q does not name the unknown annotation", message)
	}

	if err := client.CoreV1().Services("web").Delete(context.Background(), "front", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForServiceAbsent(t, client, "web", "front")
	if left := ownedLeft(fake); len(left) > 0 {
		t.Errorf("left after delete: %v", left)
	}
	m.requireRunning(t)
}

// TestAWSCrashAtEveryStepOfACreate kills herald-ccm (SIGKILL) right after
// AWS applied the k-th write of a create, for every k, restarts it, checks
// the Service converges to one stack, and deletes it: after each round
// nothing of herald's is left. Each round starts from an empty account, so
// the cluster's backend group is created (and crashed after) every time.
func TestAWSCrashAtEveryStepOfACreate(t *testing.T) {
	c, client, fake, m := startAWSLab(t, "", nil, "node-a")
	createNamespace(t, client, "crash")
	createService(t, client, newService("crash", "probe", v1.ServiceTypeLoadBalancer, nil))
	waitForService(t, client, "crash", "probe", "has an NLB hostname", hasHostname)
	var steps []string
	for _, call := range fake.Calls() {
		if call.Mutating {
			steps = append(steps, call.Action)
		}
	}
	t.Logf("a create makes %d writes: %v", len(steps), steps)
	deleteAndCheck := func(name string) {
		t.Helper()
		if err := client.CoreV1().Services("crash").Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitForServiceAbsent(t, client, "crash", name)
		if left := ownedLeft(fake); len(left) > 0 {
			t.Fatalf("left after deleting %s: %v", name, left)
		}
	}
	deleteAndCheck("probe")
	for k := 1; k <= len(steps); k++ {
		name := fmt.Sprintf("svc-%d", k)
		var once sync.Once
		killed := make(chan struct{})
		writes := 0
		pid := m.PID()
		fake.SetAfterCall(func(call awsfake.Call, _ int) {
			if !call.Mutating || call.ErrorCode != "" {
				return
			}
			if writes++; writes == k {
				once.Do(func() {
					_ = syscall.Kill(pid, syscall.SIGKILL)
					close(killed)
				})
			}
		})
		createService(t, client, newService("crash", name, v1.ServiceTypeLoadBalancer, nil))
		select {
		case <-killed:
		case <-time.After(waitTimeout):
			t.Fatalf("the create of %s made fewer than %d writes", name, k)
		}
		<-m.Exited()
		fake.SetAfterCall(nil)
		m = startAWSCCM(t, c, awsCloudConfig(fake.URL(), fake.Region, fake.VPCID(), ""))
		waitForService(t, client, "crash", name, fmt.Sprintf("converged after a crash at write %d (%s)", k, steps[k-1]), hasHostname)
		if stack := stackIn(fake, "crash/"+name); len(stack["loadbalancer"]) != 1 || len(stack["targetgroup"]) != 1 || len(stack["securitygroup"]) != 1 {
			t.Fatalf("after a crash at write %d: %+v", k, stack)
		}
		deleteAndCheck(name)
	}
	m.requireRunning(t)
}

// TestAWSThrottlingStormAndNoOpResync creates 100 Services while AWS
// throttles a third of all calls: all must converge, the calls must stay
// within the configured budget, and a restarted herald-ccm must re-ensure
// them all without a single write. Eight sync workers would call faster
// than the budget allows, so the budget is what paces them.
func TestAWSThrottlingStormAndNoOpResync(t *testing.T) {
	const services, qps, burst = 100, 10, 10
	budget := fmt.Sprintf("  rateLimits: {elbv2: {qps: %d, burst: %d}, ec2: {qps: %d, burst: %d}}\n", qps, burst, qps, burst)
	workers := []string{"--concurrent-service-syncs=8"}
	c, client, fake, m := startAWSLab(t, budget, workers, "node-a", "node-b")
	var mu sync.Mutex
	calls := 0
	fake.SetFault(func(call awsfake.Call, _ int) *awsfake.Error {
		mu.Lock()
		defer mu.Unlock()
		if calls++; calls%3 == 0 {
			return awsfake.Throttled(call.Service)
		}
		return nil
	})
	createNamespace(t, client, "storm")
	start := time.Now()
	for i := range services {
		createService(t, client, newService("storm", fmt.Sprintf("s%03d", i), v1.ServiceTypeLoadBalancer, nil))
	}
	waitFor(t, 10*time.Minute, "every Service has its NLB", func() bool {
		list, err := client.CoreV1().Services("storm").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false
		}
		done := 0
		for i := range list.Items {
			if hasHostname(&list.Items[i]) {
				done++
			}
		}
		return done == services
	})
	elapsed := time.Since(start)
	t.Logf("%d Services converged in %v through %d calls (%.1f/s), a third of them throttled", services, elapsed,
		len(fake.Calls()), float64(len(fake.Calls()))/elapsed.Seconds())
	checkBudget(t, fake.Calls(), qps, burst)
	lbs := 0
	for _, r := range fake.Resources() {
		if r.Kind == "loadbalancer" {
			lbs++
		}
	}
	if lbs != services {
		t.Errorf("%d load balancers for %d Services", lbs, services)
	}

	fake.SetFault(nil)
	m.stop()
	fake.ResetCalls()
	m = startAWSCCM(t, c, awsCloudConfig(fake.URL(), fake.Region, fake.VPCID(), budget), workers...)
	// Each re-ensured Service reads its load balancer's listeners once.
	waitFor(t, 3*time.Minute, "every Service re-ensured after the restart", func() bool {
		return fake.Counts()["elbv2:DescribeListeners"] >= services
	})
	if n := fake.MutatingCalls(); n != 0 {
		t.Errorf("a no-op resync made %d writes", n)
	}
	m.requireRunning(t)
}

// checkBudget asserts that no family made more calls in any stretch than
// its token bucket allows: burst plus qps per second.
func checkBudget(t *testing.T, calls []awsfake.Call, qps float64, burst int) {
	t.Helper()
	byFamily := map[string][]time.Time{}
	for _, c := range calls {
		byFamily[c.Service] = append(byFamily[c.Service], c.Time)
	}
	for family, times := range byFamily {
		slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
		for i := range times {
			for j := i + burst; j < len(times); j += burst {
				elapsed := times[j].Sub(times[i]).Seconds()
				// 50 ms of slack for timestamps taken after the HTTP hop.
				if allowed := float64(burst) + qps*(elapsed+0.05); float64(j-i+1) > allowed {
					t.Fatalf("%s: %d calls in %.2fs, the budget allows %.0f", family, j-i+1, elapsed, allowed)
				}
			}
		}
	}
}
