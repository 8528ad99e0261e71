package deploy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/aws/api"
	"github.com/heraldlb/herald/aws/awsfake"
	"github.com/heraldlb/herald/aws/build"
	"github.com/heraldlb/herald/aws/model"
	"github.com/heraldlb/herald/provider/service"
)

const cluster = "prod"

// env is a fake AWS and what a herald process holds: real SDK clients, a
// cache and a Deployer. restart drops the process state, as a crash does.
type env struct {
	t         *testing.T
	fake      *awsfake.Server
	url       string
	nodeGroup string
	cache     *api.Cache
	deployer  *Deployer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	fake := awsfake.New()
	e := &env{t: t, fake: fake, url: fake.Start()}
	t.Cleanup(fake.Close)
	e.nodeGroup = fake.AddSecurityGroup("nodes", map[string]string{build.ClusterTagKey(cluster): "owned"})
	for _, id := range []string{"i-a", "i-b", "i-c", "i-d"} {
		fake.AddInstance(awsfake.Instance{ID: id, Zone: "eu-west-1a"})
	}
	e.restart()
	return e
}

func (e *env) restart() {
	e.t.Helper()
	clients, err := api.New(context.Background(), api.Config{Region: "eu-west-1", ELBv2Endpoint: e.url, EC2Endpoint: e.url,
		ELBv2Rate: api.Rate{QPS: 1000, Burst: 1000}, EC2Rate: api.Rate{QPS: 1000, Burst: 1000},
		MaxAttempts: 5, MaxBackoff: 10 * time.Millisecond,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDFAKE", "secret", "")})
	if err != nil {
		e.t.Fatal(err)
	}
	e.cache = api.NewCache(clients.ELB, clients.EC2, time.Hour, time.Now)
	e.deployer = New(e.cache, Config{ClusterName: cluster, VPCID: e.fake.VPCID()})
}

func lbService(name string, mutate func(*v1.Service)) *v1.Service {
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: name, UID: types.UID("uid-" + name)},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer,
			Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, NodePort: 30080}}},
	}
	if mutate != nil {
		mutate(svc)
	}
	return svc
}

func nodes(ids ...string) []*v1.Node {
	var out []*v1.Node
	for _, id := range ids {
		out = append(out, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-" + id}, Spec: v1.NodeSpec{ProviderID: "aws:///eu-west-1a/" + id}})
	}
	return out
}

func stackOf(t *testing.T, svc *v1.Service, ns []*v1.Node) *model.Stack {
	t.Helper()
	lb, err := service.Build(svc, ns)
	if err != nil {
		t.Fatal(err)
	}
	stack, err := build.Build(lb, build.Options{ClusterName: cluster})
	if err != nil {
		t.Fatal(err)
	}
	return stack
}

func (e *env) ensure(stack *model.Stack, status ...string) string {
	e.t.Helper()
	dns, err := e.deployer.Ensure(context.Background(), stack, status)
	if err != nil {
		e.t.Fatalf("Ensure: %v", err)
	}
	return dns
}

// nothingLeft fails unless the fake holds only the node group, with no rules.
func (e *env) nothingLeft() {
	e.t.Helper()
	for _, r := range e.fake.Resources() {
		if r.Kind == "securitygroup" && r.ID == e.nodeGroup {
			continue
		}
		e.t.Errorf("left behind: %s %s %v", r.Kind, r.ID, r.Tags)
	}
}

func (e *env) count(kind string) int {
	n := 0
	for _, r := range e.fake.Resources() {
		if r.Kind == kind {
			n++
		}
	}
	return n
}

func mutatingCalls(calls []awsfake.Call) []string {
	var out []string
	for _, c := range calls {
		if c.Mutating {
			out = append(out, c.Action)
		}
	}
	return out
}

func TestCreateUpdateDelete(t *testing.T) {
	e := newEnv(t)
	stack := stackOf(t, lbService("front", nil), nodes("i-a", "i-b"))
	dns := e.ensure(stack)
	if !strings.Contains(dns, ".elb.eu-west-1.amazonaws.com") {
		t.Fatalf("DNS name %q", dns)
	}
	if got := e.fake.Targets(stack.TargetGroups[0].Name); !slices.Equal(got, []string{"i-a", "i-b"}) {
		t.Fatalf("targets = %v", got)
	}
	if e.count("loadbalancer") != 1 || e.count("listener") != 1 || e.count("targetgroup") != 1 || e.count("rule") != 2 {
		t.Fatalf("resources after create: %+v", e.fake.Resources())
	}

	// No-op: a warm cache makes no call at all; a cold one only reads.
	e.fake.ResetCalls()
	e.ensure(stack)
	if calls := e.fake.Calls(); len(calls) != 0 {
		t.Errorf("no-op reconcile with a warm cache made %d calls: %v", len(calls), mutatingCalls(calls))
	}
	e.restart()
	e.ensure(stack)
	if m := mutatingCalls(e.fake.Calls()); len(m) != 0 {
		t.Errorf("no-op reconcile after a restart made writes: %v", m)
	}

	// A node joins and one leaves: one register and one deregister per target group.
	e.fake.ResetCalls()
	e.ensure(stackOf(t, lbService("front", nil), nodes("i-a", "i-c")))
	if m := mutatingCalls(e.fake.Calls()); !slices.Equal(m, []string{"RegisterTargets", "DeregisterTargets"}) {
		t.Errorf("node change made %v, want one RegisterTargets and one DeregisterTargets", m)
	}

	// Ports and annotations change.
	changed := lbService("front", func(s *v1.Service) {
		s.Spec.Ports = []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 8080, NodePort: 30081},
			{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, NodePort: 30053}}
		s.Annotations = map[string]string{build.AnnotationHealthCheckInterval: "30", build.AnnotationCrossZone: "true"}
	})
	stack = stackOf(t, changed, nodes("i-a", "i-c"))
	e.ensure(stack)
	if e.count("listener") != 2 || e.count("targetgroup") != 2 {
		t.Fatalf("after port change: %+v", e.fake.Resources())
	}
	e.restart()
	e.fake.ResetCalls()
	e.ensure(stack)
	if m := mutatingCalls(e.fake.Calls()); len(m) != 0 {
		t.Errorf("update did not converge: a fresh reconcile still writes %v", m)
	}

	if err := e.deployer.Delete(context.Background(), "web/front"); err != nil {
		t.Fatal(err)
	}
	e.nothingLeft()
}

// TestCrashAtEveryStepOfACreate stops a create after each of its writes in
// turn (the process "dies" right after AWS applied call k) and checks that
// a restarted herald converges to exactly one stack and deletes it all.
func TestCrashAtEveryStepOfACreate(t *testing.T) {
	probe := newEnv(t)
	stack := stackOf(t, lbService("front", nil), nodes("i-a", "i-b"))
	probe.ensure(stack)
	steps := mutatingCalls(probe.fake.Calls())
	if len(steps) < 6 {
		t.Fatalf("a create made only %v", steps)
	}
	for k := 1; k <= len(steps); k++ {
		t.Run(fmt.Sprintf("after %d %s", k, steps[k-1]), func(t *testing.T) {
			e := newEnv(t)
			ctx, crash := context.WithCancel(context.Background())
			writes := 0
			e.fake.SetAfterCall(func(c awsfake.Call, _ int) {
				if c.Mutating && c.ErrorCode == "" {
					if writes++; writes == k {
						crash()
					}
				}
			})
			if _, err := e.deployer.Ensure(ctx, stack, nil); err == nil && k < len(steps) {
				t.Fatalf("Ensure survived a crash after write %d", k)
			}
			e.fake.SetAfterCall(nil)
			e.restart()
			e.ensure(stack)
			if e.count("loadbalancer") != 1 || e.count("targetgroup") != 1 || e.count("listener") != 1 {
				t.Fatalf("after recovery: %+v", e.fake.Resources())
			}
			e.fake.ResetCalls()
			e.restart()
			e.ensure(stack)
			if m := mutatingCalls(e.fake.Calls()); len(m) != 0 {
				t.Fatalf("not converged after recovery: next reconcile writes %v", m)
			}
			if err := e.deployer.Delete(context.Background(), "web/front"); err != nil {
				t.Fatal(err)
			}
			e.nothingLeft()
		})
	}
}

func TestReplacementCreatesFirstAndDeletesAfterStatusMoves(t *testing.T) {
	e := newEnv(t)
	oldDNS := e.ensure(stackOf(t, lbService("front", nil), nodes("i-a")))
	internal := stackOf(t, lbService("front", func(s *v1.Service) {
		s.Annotations = map[string]string{build.AnnotationScheme: "internal"}
	}), nodes("i-a"))
	newDNS := e.ensure(internal, oldDNS)
	if newDNS == oldDNS || !strings.HasPrefix(newDNS, "internal-") {
		t.Fatalf("new DNS %q (old %q)", newDNS, oldDNS)
	}
	if e.count("loadbalancer") != 2 {
		t.Fatalf("the old load balancer must serve until the status moves: %+v", e.fake.Resources())
	}
	lookup := func(string) ServiceState {
		return ServiceState{Exists: true, UID: string(lbService("front", nil).UID), Hostnames: []string{newDNS}}
	}
	orphans, err := e.deployer.GC(context.Background(), lookup, false)
	if err != nil || len(orphans) != 0 {
		t.Fatalf("GC = %v, %v", orphans, err)
	}
	if e.count("loadbalancer") != 1 || e.count("securitygroup") != 3 || e.count("rule") != 2 {
		t.Fatalf("after the status moved, only the new stack remains: %+v", e.fake.Resources())
	}
}

func TestGCReportsOrDeletesOrphans(t *testing.T) {
	e := newEnv(t)
	e.ensure(stackOf(t, lbService("gone", nil), nodes("i-a")))
	kept := lbService("kept", nil)
	e.ensure(stackOf(t, kept, nodes("i-a")))
	lookup := func(key string) ServiceState {
		if key == "web/kept" {
			return ServiceState{Exists: true, UID: string(kept.UID)}
		}
		return ServiceState{}
	}
	orphans, err := e.deployer.GC(context.Background(), lookup, false)
	if err != nil || len(orphans) != 1 || orphans[0].Service != "web/gone" || orphans[0].Deleted {
		t.Fatalf("report-only GC = %+v, %v", orphans, err)
	}
	if e.count("loadbalancer") != 2 {
		t.Fatal("report-only GC deleted something")
	}
	orphans, err = e.deployer.GC(context.Background(), lookup, true)
	if err != nil || len(orphans) != 1 || !orphans[0].Deleted {
		t.Fatalf("deleting GC = %+v, %v", orphans, err)
	}
	if e.count("loadbalancer") != 1 {
		t.Fatalf("after GC: %+v", e.fake.Resources())
	}
}

func TestNameConflictBetweenServices(t *testing.T) {
	e := newEnv(t)
	named := func(s *v1.Service) { s.Annotations = map[string]string{build.AnnotationName: "shared-name"} }
	e.ensure(stackOf(t, lbService("first", named), nodes("i-a")))
	_, err := e.deployer.Ensure(context.Background(), stackOf(t, lbService("second", named), nodes("i-a")), nil)
	var conflict *ConflictError
	if !errors.As(err, &conflict) || conflict.Owner != "web/first" {
		t.Fatalf("error = %v, want a ConflictError naming web/first", err)
	}
}

func TestStoppedInstanceDoesNotBlockTheOthers(t *testing.T) {
	e := newEnv(t)
	e.fake.SetInstanceState("i-b", "stopped")
	stack := stackOf(t, lbService("front", nil), nodes("i-a", "i-b", "i-c"))
	e.ensure(stack)
	if got := e.fake.Targets(stack.TargetGroups[0].Name); !slices.Equal(got, []string{"i-a", "i-c"}) {
		t.Fatalf("targets = %v, want the running ones", got)
	}
}

// TestNodeRulesDoNotGrowWithServices creates more Services than EC2 allows
// rules in a group (60): the nodes' group keeps one shared rule.
func TestNodeRulesDoNotGrowWithServices(t *testing.T) {
	e := newEnv(t)
	for i := range 70 {
		e.ensure(stackOf(t, lbService(fmt.Sprintf("s%02d", i), func(s *v1.Service) {
			s.Spec.Ports[0].NodePort = int32(30100 + i)
		}), nodes("i-a")))
	}
	rules := 0
	for _, r := range e.fake.Resources() {
		if r.Kind == "rule" && strings.HasPrefix(r.ID, e.nodeGroup+" ") {
			rules++
		}
	}
	if rules != 1 {
		t.Fatalf("the nodes' group holds %d rules for 70 Services, want the one shared NodePort-range rule", rules)
	}
	for i := range 70 {
		if err := e.deployer.Delete(context.Background(), fmt.Sprintf("web/s%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	e.nothingLeft()
}

// TestAdditionalTagsReachEveryResource changes the additional-resource-tags
// annotation of an existing Service: the load balancer, its target group and
// its frontend security group all get the new set (added, changed and
// removed keys), and a fresh reconcile then writes nothing.
func TestAdditionalTagsReachEveryResource(t *testing.T) {
	e := newEnv(t)
	tagged := func(tags string) *model.Stack {
		return stackOf(t, lbService("front", func(s *v1.Service) {
			s.Annotations = map[string]string{build.AnnotationAdditionalTags: tags}
		}), nodes("i-a"))
	}
	e.ensure(tagged("team=web,cost=old,owner=alice"))
	stack := tagged("team=web,cost=new,env=prod")
	e.ensure(stack)

	want := map[string]string{"team": "web", "cost": "new", "env": "prod"}
	kinds := map[string]int{}
	for _, r := range e.fake.Resources() {
		if r.Kind == "rule" || r.ID == e.nodeGroup || r.Tags[build.TagRole] == build.RoleBackend {
			continue // not the Service's own: the node group, the cluster's backend group
		}
		kinds[r.Kind]++
		if r.Kind == "listener" {
			continue // the fake does not track listener tags
		}
		for k, v := range want {
			if r.Tags[k] != v {
				t.Errorf("%s %s: tag %s = %q, want %q (tags %v)", r.Kind, r.ID, k, r.Tags[k], v, r.Tags)
			}
		}
		if _, ok := r.Tags["owner"]; ok {
			t.Errorf("%s %s keeps a removed tag: %v", r.Kind, r.ID, r.Tags)
		}
	}
	if kinds["loadbalancer"] != 1 || kinds["targetgroup"] != 1 || kinds["securitygroup"] != 1 {
		t.Fatalf("checked %v, want one load balancer, target group and frontend security group", kinds)
	}

	e.restart()
	e.fake.ResetCalls()
	e.ensure(stack)
	if m := mutatingCalls(e.fake.Calls()); len(m) != 0 {
		t.Errorf("retagging did not converge: a fresh reconcile still writes %v", m)
	}
}
