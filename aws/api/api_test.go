package api_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/heraldlb/herald/aws/api"
	"github.com/heraldlb/herald/aws/awsfake"
)

// newClients returns real SDK clients talking to a fresh fake.
func newClients(t *testing.T, fake *awsfake.Server, r api.Rate) *api.Clients {
	t.Helper()
	url := fake.Start()
	t.Cleanup(fake.Close)
	c, err := api.New(context.Background(), api.Config{Region: fake.Region, ELBv2Endpoint: url, EC2Endpoint: url,
		ELBv2Rate: r, EC2Rate: r, MaxAttempts: 8, MaxBackoff: 20 * time.Millisecond,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDFAKE", "secret", "")})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var fast = api.Rate{QPS: 1000, Burst: 1000}

func TestLoadBalancerLifecycleThroughTheSDK(t *testing.T) {
	fake := awsfake.New()
	fake.PageSize = 2 // every list spans pages
	c := newClients(t, fake, fast)
	ctx := context.Background()
	fake.AddInstance(awsfake.Instance{ID: "i-1", Zone: "eu-west-1a"})
	sg, err := c.EC2.CreateSecurityGroup(ctx, "front", "herald frontend", fake.VPCID(), map[string]string{"herald.dev/cluster": "c"})
	if err != nil {
		t.Fatal(err)
	}
	var arns []string
	for _, name := range []string{"lb-a", "lb-b", "lb-c"} {
		lb, err := c.ELB.CreateLoadBalancer(ctx, api.CreateLoadBalancerInput{Name: name, Scheme: "internet-facing",
			IPAddressType: "ipv4", Subnets: []api.SubnetMapping{{SubnetID: "subnet-0fakea"}}, SecurityGroups: []string{sg},
			Tags: map[string]string{"herald.dev/cluster": "c", "n": name}})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(lb.ARN, ":loadbalancer/net/"+name+"/") || lb.DNSName == "" {
			t.Fatalf("load balancer = %+v, want a /net/ ARN and a DNS name", lb)
		}
		arns = append(arns, lb.ARN)
	}
	all, err := c.ELB.LoadBalancers(ctx)
	if err != nil || len(all) != 3 {
		t.Fatalf("LoadBalancers = %d, %v; want 3 across pages", len(all), err)
	}
	tags, err := c.ELB.Tags(ctx, arns)
	if err != nil || tags[arns[1]]["n"] != "lb-b" {
		t.Fatalf("Tags = %v, %v", tags, err)
	}

	tg, err := c.ELB.CreateTargetGroup(ctx, api.TargetGroup{Name: "tg-a", Protocol: "TCP", Port: 30080, VPCID: fake.VPCID(),
		TargetType: "instance", IPAddressType: "ipv4", HealthCheck: api.HealthCheck{Protocol: "HTTP", Port: "32000", Path: "/healthz",
			IntervalSeconds: 10, TimeoutSeconds: 6, HealthyThreshold: 3, UnhealthyThreshold: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ELB.CreateListener(ctx, api.Listener{LoadBalancerARN: arns[0], Port: 80, Protocol: "TCP", TargetGroupARN: tg.ARN}); err != nil {
		t.Fatal(err)
	}
	if err := c.ELB.RegisterTargets(ctx, tg.ARN, []api.Target{{ID: "i-1", Port: 30080}}); err != nil {
		t.Fatal(err)
	}
	var states []string
	for range 2 {
		health, err := c.ELB.TargetHealth(ctx, tg.ARN)
		if err != nil || len(health) != 1 {
			t.Fatalf("TargetHealth = %v, %v", health, err)
		}
		states = append(states, health[0].State)
	}
	if !slices.Equal(states, []string{"initial", "healthy"}) {
		t.Errorf("target health went %v, want initial then healthy", states)
	}
	err = c.ELB.RegisterTargets(ctx, tg.ARN, []api.Target{{ID: "i-unknown", Port: 30080}})
	if !api.IsCode(err, api.CodeInvalidTarget) {
		t.Errorf("registering an unknown instance: %v, want InvalidTarget", err)
	}
	if err := c.ELB.DeleteTargetGroup(ctx, tg.ARN); !api.IsCode(err, api.CodeResourceInUse) {
		t.Errorf("deleting a target group in use: %v, want ResourceInUse", err)
	}

	rule := api.Permission{Protocol: "tcp", FromPort: 30080, ToPort: 30080, SourceGroup: sg, Description: "herald.dev/cluster=c;lb=lb-a"}
	nodes := fake.AddSecurityGroup("nodes", nil)
	if err := c.EC2.AuthorizeIngress(ctx, nodes, []api.Permission{rule, {Protocol: "tcp", FromPort: 80, ToPort: 80, CIDR: "2001:db8::/32"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.EC2.AuthorizeIngress(ctx, nodes, []api.Permission{rule}); !api.IsCode(err, api.CodePermissionDuplicate) {
		t.Errorf("duplicate rule: %v, want InvalidPermission.Duplicate", err)
	}
	groups, err := c.EC2.SecurityGroups(ctx, []string{nodes})
	if err != nil || len(groups) != 1 || len(groups[0].Ingress) != 2 || groups[0].Ingress[0] != rule {
		t.Fatalf("SecurityGroups = %+v, %v; want the two rules, descriptions kept", groups, err)
	}
	if err := c.EC2.DeleteSecurityGroup(ctx, sg); !api.IsCode(err, api.CodeDependencyViolation) {
		t.Errorf("deleting a group in use: %v, want DependencyViolation", err)
	}
	if err := c.EC2.RevokeIngress(ctx, nodes, []api.Permission{rule}); err != nil {
		t.Fatal(err)
	}
	subnets, err := c.EC2.Subnets(ctx, nil, api.Filter{Name: "tag:kubernetes.io/role/elb", Values: []string{"1", ""}})
	if err != nil || len(subnets) != 3 {
		t.Fatalf("Subnets = %+v, %v", subnets, err)
	}
	instances, err := c.EC2.Instances(ctx, []string{"i-1", "i-gone"})
	if err != nil || len(instances) != 1 || instances[0].State != "running" || instances[0].Zone != "eu-west-1a" {
		t.Fatalf("Instances = %+v, %v", instances, err)
	}
}

func TestDuplicateNameVersusIdempotentCreate(t *testing.T) {
	fake := awsfake.New()
	c := newClients(t, fake, fast)
	ctx := context.Background()
	in := api.CreateLoadBalancerInput{Name: "same", Scheme: "internet-facing", IPAddressType: "ipv4",
		Subnets: []api.SubnetMapping{{SubnetID: "subnet-0fakea"}}}
	first, err := c.ELB.CreateLoadBalancer(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.ELB.CreateLoadBalancer(ctx, in)
	if err != nil || again.ARN != first.ARN {
		t.Fatalf("identical create = %+v, %v; want the same load balancer", again, err)
	}
	in.Scheme = "internal"
	if _, err := c.ELB.CreateLoadBalancer(ctx, in); !api.IsCode(err, api.CodeDuplicateLoadBalancerName) {
		t.Fatalf("create with other settings: %v, want DuplicateLoadBalancerName", err)
	}
	in.Name = strings.Repeat("n", 33)
	if _, err := c.ELB.CreateLoadBalancer(ctx, in); api.ErrorCode(err) != "ValidationError" {
		t.Fatalf("33-character name: %v, want ValidationError", err)
	}
	tags := map[string]string{}
	for i := range 51 {
		tags[strings.Repeat("k", i+1)] = "v"
	}
	in.Name, in.Tags = "tagged", tags
	if _, err := c.ELB.CreateLoadBalancer(ctx, in); api.ErrorCode(err) != "TooManyTags" {
		t.Fatalf("51 tags: %v, want TooManyTags", err)
	}
}

func TestRetriesThrottlingAndUnavailableAndAdaptsTheBudget(t *testing.T) {
	fake := awsfake.New()
	c := newClients(t, fake, api.Rate{QPS: 100, Burst: 10})
	ctx := context.Background()
	// Every other call of the first eight fails: first each family is
	// throttled once, then each gets a 503.
	fake.SetFault(func(call awsfake.Call, n int) *awsfake.Error {
		switch {
		case n > 8 || n%2 == 0:
			return nil
		case n <= 4:
			return awsfake.Throttled(call.Service)
		}
		return awsfake.Unavailable()
	})
	for range 2 {
		if _, err := c.ELB.LoadBalancers(ctx); err != nil {
			t.Fatalf("LoadBalancers through faults: %v", err)
		}
		if _, err := c.EC2.Subnets(ctx, nil); err != nil {
			t.Fatalf("Subnets through faults: %v", err)
		}
	}
	for _, call := range []awsfake.Call{fake.Calls()[0], fake.Calls()[2]} {
		if call.ErrorCode != map[string]string{"elbv2": "Throttling", "ec2": "RequestLimitExceeded"}[call.Service] {
			t.Errorf("call %s:%s failed with %q, want its family's throttling code", call.Service, call.Action, call.ErrorCode)
		}
	}
	if got := len(fake.Calls()); got != 8 {
		t.Errorf("calls = %d, want 8 (4 failed attempts retried)", got)
	}
	if c.ELBBudget.Limit() >= 100 || c.EC2Budget.Limit() >= 100 {
		t.Errorf("budgets after throttling = %v, %v; want them lowered", c.ELBBudget.Limit(), c.EC2Budget.Limit())
	}
	// Throttling that never ends fails the call once attempts run out.
	fake.SetFault(func(call awsfake.Call, _ int) *awsfake.Error { return awsfake.Throttled(call.Service) })
	_, err := c.ELB.LoadBalancers(ctx)
	if api.ErrorCode(err) != "Throttling" {
		t.Fatalf("endless throttling: %v, want the Throttling error", err)
	}
	var apiErr interface{ ErrorCode() string }
	if !errors.As(err, &apiErr) {
		t.Fatalf("error %v is not an API error", err)
	}
}

// TestBudgetPacesEveryAttempt checks the shared bucket holds calls to its
// rate: 30 calls with a burst of 5 at 50/s cannot take less than 0.5 s.
// (Load only makes them slower, so this cannot flake the other way.)
func TestBudgetPacesEveryAttempt(t *testing.T) {
	fake := awsfake.New()
	c := newClients(t, fake, api.Rate{QPS: 50, Burst: 5})
	for range 30 {
		if _, err := c.EC2.Subnets(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	calls := fake.Calls()
	if span := calls[len(calls)-1].Time.Sub(calls[0].Time); span < 480*time.Millisecond {
		t.Fatalf("30 calls took %v; a budget of 5 + 50/s needs at least 0.5 s", span)
	}
}
