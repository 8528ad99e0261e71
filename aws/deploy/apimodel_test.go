package deploy

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/heraldlb/herald/aws/api"
	"github.com/heraldlb/herald/aws/awsfake"
	"github.com/heraldlb/herald/aws/build"
)

// awsModel is the part of a published AWS API model (api-2.json) the test reads.
type awsModel struct {
	Operations map[string]struct {
		Input  struct{ Shape string }   `json:"input"`
		Errors []struct{ Shape string } `json:"errors"`
	} `json:"operations"`
	Shapes map[string]struct {
		Required []string `json:"required"`
		Members  map[string]struct {
			LocationName string `json:"locationName"`
			QueryName    string `json:"queryName"`
		} `json:"members"`
		Error *struct{ Code string } `json:"error"`
	} `json:"shapes"`
}

// loadModels reads AWS's own models from the aws-sdk-go module, fetched
// through the Go module proxy into the module cache (not vendored).
func loadModels(t *testing.T) map[string]*awsModel {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", "github.com/aws/aws-sdk-go@v1.55.8").Output()
	if err != nil {
		t.Fatalf("go mod download github.com/aws/aws-sdk-go@v1.55.8: %v", err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download output %q: %v", out, err)
	}
	models := map[string]*awsModel{}
	for service, path := range map[string]string{
		"elbv2": "models/apis/elasticloadbalancingv2/2015-12-01/api-2.json",
		"ec2":   "models/apis/ec2/2016-11-15/api-2.json",
	} {
		data, err := os.ReadFile(filepath.Join(mod.Dir, path))
		if err != nil {
			t.Fatal(err)
		}
		var m awsModel
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		models[service] = &m
	}
	return models
}

// commonErrors may be returned by any operation of any Query API (AWS's
// "Common Errors" pages), so models do not list them per operation.
var commonErrors = []string{"Throttling", "RequestLimitExceeded", "ServiceUnavailable", "InternalFailure",
	"ValidationError", "InvalidAction", "MissingParameter", "InvalidParameterValue"}

// ec2ClientErrors are the EC2 codes the fake returns, all from the EC2 API
// reference's list of client error codes: EC2's model declares no errors
// for any operation (the test checks that it still does not).
var ec2ClientErrors = []string{"InvalidGroup.NotFound", "InvalidGroup.Duplicate", "InvalidPermission.Duplicate",
	"InvalidPermission.NotFound", "DependencyViolation", "InvalidVpcID.NotFound", "InvalidSubnetID.NotFound",
	"InvalidInstanceID.NotFound", "RulesPerSecurityGroupLimitExceeded", "TagLimitExceeded"}

// TestCallsAndFakeMatchAWSModels drives herald (deploy, the API layer and
// InstancesV2-style reads) and the fake's error paths through the real
// SDK, then checks every call against AWS's published models: the action
// exists, every required member was sent, and every error the fake
// answered is one AWS declares for that operation.
func TestCallsAndFakeMatchAWSModels(t *testing.T) {
	models := loadModels(t)
	for service, actions := range awsfake.Actions() {
		for _, action := range actions {
			if _, ok := models[service].Operations[action]; !ok {
				t.Errorf("the fake implements %s:%s, which AWS's model does not have", service, action)
			}
		}
	}
	e := newEnv(t)
	driveEverything(t, e)
	calls := e.fake.Calls()
	seen := map[string]bool{}
	for _, c := range calls {
		seen[c.Service+":"+c.Action] = true
		op, ok := models[c.Service].Operations[c.Action]
		if !ok {
			t.Errorf("herald called %s:%s, which AWS's model does not have", c.Service, c.Action)
			continue
		}
		input := models[c.Service].Shapes[op.Input.Shape]
		for _, member := range input.Required {
			name := serializedName(c.Service, member, input.Members[member].LocationName, input.Members[member].QueryName)
			if !sent(c.Params, name) {
				t.Errorf("%s:%s sent without required member %s (%s)", c.Service, c.Action, member, name)
			}
		}
		if c.ErrorCode == "" || slices.Contains(commonErrors, c.ErrorCode) {
			continue
		}
		var declared []string
		for _, e := range op.Errors {
			shape := models[c.Service].Shapes[e.Shape]
			if shape.Error != nil && shape.Error.Code != "" {
				declared = append(declared, shape.Error.Code)
			} else {
				declared = append(declared, e.Shape)
			}
		}
		if c.Service == "ec2" {
			if len(op.Errors) > 0 {
				t.Errorf("EC2's model now declares errors for %s: check against them instead of the list", c.Action)
			}
			declared = ec2ClientErrors
		}
		if !slices.Contains(declared, c.ErrorCode) {
			t.Errorf("the fake answered %s:%s with %s, which AWS does not declare for it (declared: %v)", c.Service, c.Action, c.ErrorCode, declared)
		}
	}
	for _, want := range []string{"elbv2:CreateLoadBalancer", "elbv2:RegisterTargets", "elbv2:DeregisterTargets",
		"elbv2:CreateListener", "elbv2:ModifyListener", "elbv2:ModifyTargetGroup", "elbv2:DeleteTargetGroup",
		"ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", "ec2:DeleteSecurityGroup", "ec2:DescribeInstances",
		"ec2:CreateTags", "ec2:DeleteTags"} {
		if !seen[want] {
			t.Errorf("the scenario never called %s: the check covers less than herald does", want)
		}
	}
	errorsSeen := 0
	for _, c := range calls {
		if c.ErrorCode != "" {
			errorsSeen++
		}
	}
	if errorsSeen < 8 {
		t.Errorf("only %d error answers were checked", errorsSeen)
	}
}

// serializedName is how the Query protocols name a member on the wire:
// ELBv2 uses the member name, EC2 its queryName, else its locationName
// capitalised, else the member name.
func serializedName(service, member, locationName, queryName string) string {
	if service != "ec2" {
		return member
	}
	switch {
	case queryName != "":
		return queryName
	case locationName != "":
		return strings.ToUpper(locationName[:1]) + locationName[1:]
	}
	return member
}

func sent(params map[string][]string, name string) bool {
	for k := range params {
		if k == name || strings.HasPrefix(k, name+".") {
			return true
		}
	}
	return false
}

// driveEverything runs herald's operations and provokes the errors herald
// handles, all against e's fake.
func driveEverything(t *testing.T, e *env) {
	ctx := context.Background()
	svc := lbService("front", func(s *v1.Service) {
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = 32000
		s.Annotations = map[string]string{build.AnnotationTargetGroupAttributes: "deregistration_delay.timeout_seconds=30",
			build.AnnotationAttributes: "load_balancing.cross_zone.enabled=true"}
	})
	e.ensure(stackOf(t, svc, nodes("i-a", "i-b")))
	svc.Annotations[build.AnnotationHealthCheckInterval] = "30"
	e.ensure(stackOf(t, svc, nodes("i-a", "i-b")))
	e.fake.SetInstanceState("i-d", "stopped")
	svc.Spec.Ports[0].NodePort = 30099
	svc.Annotations[build.AnnotationAdditionalTags] = "team=web"
	e.ensure(stackOf(t, svc, nodes("i-a", "i-c", "i-d")))
	svc.Spec.Ports = append(svc.Spec.Ports, v1.ServicePort{Name: "x", Protocol: v1.ProtocolTCP, Port: 81, NodePort: 30081})
	e.ensure(stackOf(t, svc, nodes("i-a")))
	svc.Spec.Ports = svc.Spec.Ports[1:]
	delete(svc.Annotations, build.AnnotationAdditionalTags)
	e.ensure(stackOf(t, svc, nodes("i-a")))
	if _, err := e.deployer.GC(ctx, func(string) ServiceState { return ServiceState{} }, true); err != nil {
		t.Fatal(err)
	}
	// Error paths, through the same SDK clients.
	c := e.cache
	sg, _ := c.CreateSecurityGroup(ctx, "probe", "probe", e.fake.VPCID(), nil)
	_, _ = c.CreateSecurityGroup(ctx, "probe", "probe", e.fake.VPCID(), nil)
	_ = c.AuthorizeIngress(ctx, e.nodeGroup, []api.Permission{{Protocol: "tcp", FromPort: 1, ToPort: 1, SourceGroup: sg}})
	_ = c.AuthorizeIngress(ctx, e.nodeGroup, []api.Permission{{Protocol: "tcp", FromPort: 1, ToPort: 1, SourceGroup: sg}})
	_ = c.DeleteSecurityGroup(ctx, sg)
	_ = c.RevokeIngress(ctx, e.nodeGroup, []api.Permission{{Protocol: "tcp", FromPort: 2, ToPort: 2, CIDR: "192.0.2.0/24"}})
	_ = c.DeleteSecurityGroup(ctx, "sg-missing")
	lb, _ := c.CreateLoadBalancer(ctx, api.CreateLoadBalancerInput{Name: "probe", Scheme: "internal", IPAddressType: "ipv4",
		Subnets: []api.SubnetMapping{{SubnetID: "subnet-0fakea"}}})
	_, _ = c.CreateLoadBalancer(ctx, api.CreateLoadBalancerInput{Name: "probe", Scheme: "internet-facing", IPAddressType: "ipv4",
		Subnets: []api.SubnetMapping{{SubnetID: "subnet-0fakea"}}})
	_, _ = c.CreateLoadBalancer(ctx, api.CreateLoadBalancerInput{Name: "probe2", Scheme: "internal", IPAddressType: "ipv4",
		Subnets: []api.SubnetMapping{{SubnetID: "subnet-missing"}}})
	tg, _ := c.CreateTargetGroup(ctx, api.TargetGroup{Name: "probe", Protocol: "TCP", Port: 1, VPCID: e.fake.VPCID(),
		TargetType: "instance", IPAddressType: "ipv4", HealthCheck: api.HealthCheck{Protocol: "TCP", Port: "traffic-port",
			IntervalSeconds: 10, TimeoutSeconds: 6, HealthyThreshold: 3, UnhealthyThreshold: 3}})
	_, _ = c.CreateTargetGroup(ctx, api.TargetGroup{Name: "probe", Protocol: "UDP", Port: 1, VPCID: e.fake.VPCID(),
		TargetType: "instance", IPAddressType: "ipv4", HealthCheck: api.HealthCheck{Protocol: "TCP", Port: "traffic-port",
			IntervalSeconds: 10, TimeoutSeconds: 6, HealthyThreshold: 3, UnhealthyThreshold: 3}})
	_, _ = c.CreateListener(ctx, api.Listener{LoadBalancerARN: lb.ARN, Port: 80, Protocol: "TCP", TargetGroupARN: tg.ARN})
	_, _ = c.CreateListener(ctx, api.Listener{LoadBalancerARN: lb.ARN, Port: 80, Protocol: "UDP", TargetGroupARN: tg.ARN})
	_ = c.DeleteTargetGroup(ctx, tg.ARN)
	_ = c.RegisterTargets(ctx, tg.ARN, []api.Target{{ID: "i-nope", Port: 1}})
	_ = c.DeleteListener(ctx, "arn:aws:elasticloadbalancing:eu-west-1:111122223333:listener/net/x/y/z")
	_, _ = c.Instances(ctx, []string{"i-a"})
	_ = c.DeleteLoadBalancer(ctx, lb.ARN)
}
