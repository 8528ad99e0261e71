package build

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/aws/model"
	"github.com/heraldlb/herald/provider/service"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func testService(mutate func(*v1.Service)) *v1.Service {
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "front", UID: "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"},
		Spec: v1.ServiceSpec{
			Type:  v1.ServiceTypeLoadBalancer,
			Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, NodePort: 30080}},
		},
	}
	if mutate != nil {
		mutate(svc)
	}
	return svc
}

func testNodes() []*v1.Node {
	node := func(name, providerID string, labels map[string]string) *v1.Node {
		return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Spec: v1.NodeSpec{ProviderID: providerID}}
	}
	return []*v1.Node{
		node("b", "aws:///eu-west-1b/i-0000000000000000b", map[string]string{"pool": "edge"}),
		node("a", "aws:///eu-west-1a/i-0000000000000000a", map[string]string{"pool": "edge"}),
		node("c", "aws:///eu-west-1c/i-0000000000000000c", nil),
		node("excluded", "aws:///eu-west-1a/i-0000000000000000e", map[string]string{LabelExcludeFromLB: ""}),
		node("bare", "", nil), // not (yet) an EC2 instance: no target
	}
}

func annotated(kv ...string) func(*v1.Service) {
	return func(svc *v1.Service) {
		if svc.Annotations == nil {
			svc.Annotations = map[string]string{}
		}
		for i := 0; i < len(kv); i += 2 {
			svc.Annotations[kv[i]] = kv[i+1]
		}
	}
}

func build(t *testing.T, svc *v1.Service) (*model.Stack, error) {
	t.Helper()
	lb, err := service.Build(svc, testNodes())
	if err != nil {
		t.Fatalf("service.Build: %v", err)
	}
	return Build(lb, Options{ClusterName: "prod", Tags: map[string]string{"team": "net"}})
}

// TestBuildGolden compares whole stacks with testdata/<case>.json; run
// with -update to rewrite them after an intended change, and review the diff.
func TestBuildGolden(t *testing.T) {
	cases := map[string]func(*v1.Service){
		"default": nil,
		"local-traffic-policy": func(s *v1.Service) {
			s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
			s.Spec.HealthCheckNodePort = 32100
		},
		"internal-fixed-subnets": annotated(AnnotationScheme, "internal",
			AnnotationSubnets, "subnet-0a, subnet-0b", AnnotationPrivateIPv4Addresses, "10.0.1.10,10.0.2.10"),
		"tls-and-attributes": func(s *v1.Service) {
			s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: "https", Protocol: v1.ProtocolTCP, Port: 443, NodePort: 30443})
			annotated(AnnotationSSLCert, "arn:aws:acm:eu-west-1:111122223333:certificate/abc",
				AnnotationSSLPorts, "https", AnnotationCrossZone, "true", AnnotationProxyProtocol, "*",
				AnnotationTargetGroupAttributes, "deregistration_delay.timeout_seconds=30",
				AnnotationAdditionalTags, "cost-center=42, owner=web",
				AnnotationHealthCheckProtocol, "http", AnnotationHealthCheckPath, "/ready",
				AnnotationHealthCheckInterval, "30", AnnotationHealthCheckTimeout, "10",
				AnnotationHealthyThreshold, "2", AnnotationUnhealthyThreshold, "4")(s)
		},
		"dns-tcp-udp-dualstack": func(s *v1.Service) {
			s.Spec.Ports = []v1.ServicePort{
				{Name: "dns-tcp", Protocol: v1.ProtocolTCP, Port: 53, NodePort: 30053},
				{Name: "dns-udp", Protocol: v1.ProtocolUDP, Port: 53, NodePort: 30053},
				{Name: "syslog", Protocol: v1.ProtocolUDP, Port: 514, NodePort: 30514},
			}
			s.Spec.LoadBalancerSourceRanges = []string{"198.51.100.0/24", "2001:db8::/32"}
			annotated(AnnotationIPAddressType, "dualstack", AnnotationTargetNodeLabels, "pool=edge")(s)
		},
		"user-name-and-security-groups": annotated(AnnotationName, "front-door",
			AnnotationSecurityGroups, "sg-0123,web-sg", AnnotationEIPAllocations, "eipalloc-1",
			AnnotationSubnets, "public-a"),
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			stack, err := build(t, testService(mutate))
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.MarshalIndent(stack, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", name+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if string(got) != string(want) {
				t.Errorf("stack differs from %s (run with -update and review the diff):\n%s", path, got)
			}
		})
	}
}

func TestBuildRejectsInvalidAnnotations(t *testing.T) {
	tests := []struct {
		name       string
		kv         []string
		annotation string
	}{
		{"unknown type", []string{AnnotationType, "clb"}, AnnotationType},
		{"ip targets", []string{AnnotationTargetType, "ip"}, AnnotationTargetType},
		{"bad scheme", []string{AnnotationScheme, "public"}, AnnotationScheme},
		{"scheme contradicts internal", []string{AnnotationScheme, "internet-facing", AnnotationInternal, "true"}, AnnotationScheme},
		{"internal not bool", []string{AnnotationInternal, "yes please"}, AnnotationInternal},
		{"empty subnet item", []string{AnnotationSubnets, "subnet-1,,subnet-2"}, AnnotationSubnets},
		{"eips on internal", []string{AnnotationScheme, "internal", AnnotationSubnets, "s", AnnotationEIPAllocations, "eipalloc-1"}, AnnotationEIPAllocations},
		{"eip count", []string{AnnotationSubnets, "a,b", AnnotationEIPAllocations, "eipalloc-1"}, AnnotationEIPAllocations},
		{"eip not an allocation", []string{AnnotationSubnets, "a", AnnotationEIPAllocations, "1.2.3.4"}, AnnotationEIPAllocations},
		{"private ip on internet-facing", []string{AnnotationSubnets, "a", AnnotationPrivateIPv4Addresses, "10.0.0.1"}, AnnotationPrivateIPv4Addresses},
		{"private ip v6", []string{AnnotationScheme, "internal", AnnotationSubnets, "a", AnnotationPrivateIPv4Addresses, "2001:db8::1"}, AnnotationPrivateIPv4Addresses},
		{"cross zone not bool", []string{AnnotationCrossZone, "maybe"}, AnnotationCrossZone},
		{"cross zone contradicts attributes", []string{AnnotationCrossZone, "true", AnnotationAttributes, "load_balancing.cross_zone.enabled=false"}, AnnotationCrossZone},
		{"tags without value separator", []string{AnnotationAdditionalTags, "a"}, AnnotationAdditionalTags},
		{"tag reserved prefix", []string{AnnotationAdditionalTags, "aws:x=1"}, AnnotationAdditionalTags},
		{"tag overrides ownership", []string{AnnotationAdditionalTags, TagCluster + "=other"}, AnnotationAdditionalTags},
		{"tag key twice", []string{AnnotationAdditionalTags, "a=1,a=2"}, AnnotationAdditionalTags},
		{"too many tags", []string{AnnotationAdditionalTags, manyTags(maxUserTags + 1)}, AnnotationAdditionalTags},
		{"hc protocol", []string{AnnotationHealthCheckProtocol, "udp"}, AnnotationHealthCheckProtocol},
		{"hc port", []string{AnnotationHealthCheckPort, "70000"}, AnnotationHealthCheckPort},
		{"hc path", []string{AnnotationHealthCheckPath, "healthz"}, AnnotationHealthCheckPath},
		{"hc interval", []string{AnnotationHealthCheckInterval, "1"}, AnnotationHealthCheckInterval},
		{"hc timeout not below interval", []string{AnnotationHealthCheckInterval, "10", AnnotationHealthCheckTimeout, "10"}, AnnotationHealthCheckTimeout},
		{"healthy threshold", []string{AnnotationHealthyThreshold, "11"}, AnnotationHealthyThreshold},
		{"unhealthy threshold", []string{AnnotationUnhealthyThreshold, "x"}, AnnotationUnhealthyThreshold},
		{"proxy protocol per port", []string{AnnotationProxyProtocol, "80"}, AnnotationProxyProtocol},
		{"unknown tg attribute", []string{AnnotationTargetGroupAttributes, "slow_start.duration_seconds=30"}, AnnotationTargetGroupAttributes},
		{"unknown lb attribute", []string{AnnotationAttributes, "idle_timeout.timeout_seconds=60"}, AnnotationAttributes},
		{"deletion protection", []string{AnnotationAttributes, "deletion_protection.enabled=true"}, AnnotationAttributes},
		{"cert not an arn", []string{AnnotationSSLCert, "my-cert"}, AnnotationSSLCert},
		{"ssl ports without cert", []string{AnnotationSSLPorts, "443"}, AnnotationSSLPorts},
		{"ssl policy without cert", []string{AnnotationSSLNegotiationPolicy, "ELBSecurityPolicy-2016-08"}, AnnotationSSLNegotiationPolicy},
		{"ip address type", []string{AnnotationIPAddressType, "ipv6"}, AnnotationIPAddressType},
		{"name too long", []string{AnnotationName, strings.Repeat("a", 33)}, AnnotationName},
		{"name charset", []string{AnnotationName, "front_door"}, AnnotationName},
		{"name hyphen end", []string{AnnotationName, "front-"}, AnnotationName},
		{"name internal prefix", []string{AnnotationName, "internal-front"}, AnnotationName},
		{"node labels", []string{AnnotationTargetNodeLabels, "pool"}, AnnotationTargetNodeLabels},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := build(t, testService(annotated(tt.kv...)))
			var ae *service.AnnotationError
			if !errors.As(err, &ae) || !errors.Is(err, service.ErrInvalidAnnotation) {
				t.Fatalf("error = %v, want an *service.AnnotationError", err)
			}
			if ae.Annotation != tt.annotation {
				t.Fatalf("error names %s, want %s", ae.Annotation, tt.annotation)
			}
		})
	}
}

func manyTags(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = "k" + strings.Repeat("x", i) + "=v"
	}
	return strings.Join(parts, ",")
}

func TestBuildRejectsInvalidSpec(t *testing.T) {
	tests := map[string]func(*v1.Service){
		"sctp":         func(s *v1.Service) { s.Spec.Ports[0].Protocol = v1.ProtocolSCTP },
		"no node port": func(s *v1.Service) { s.Spec.Ports[0].NodePort = 0 },
		"tcp and udp with different node ports": func(s *v1.Service) {
			s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Protocol: v1.ProtocolUDP, Port: 80, NodePort: 30081})
		},
		"no ports": func(s *v1.Service) { s.Spec.Ports = nil },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := build(t, testService(mutate)); !errors.Is(err, service.ErrInvalidSpec) {
				t.Fatalf("error = %v, want ErrInvalidSpec", err)
			}
		})
	}
}

func TestNamesAreValidStableAndChangeWithIdentity(t *testing.T) {
	long := func(s *v1.Service) {
		s.Namespace = strings.Repeat("n", 63)
		s.Name = "a-" + strings.Repeat("s", 61)
	}
	base, err := build(t, testService(long))
	if err != nil {
		t.Fatal(err)
	}
	again, _ := build(t, testService(long))
	if base.LoadBalancer.Name != again.LoadBalancer.Name || base.TargetGroups[0].Name != again.TargetGroups[0].Name {
		t.Fatal("names are not deterministic")
	}
	for _, name := range []string{base.LoadBalancer.Name, base.TargetGroups[0].Name} {
		if why := ValidLoadBalancerName(name); why != "" {
			t.Errorf("generated name %q is invalid: %s", name, why)
		}
	}
	internal, _ := build(t, testService(func(s *v1.Service) { long(s); annotated(AnnotationScheme, "internal")(s) }))
	if internal.LoadBalancer.Name == base.LoadBalancer.Name {
		t.Error("a scheme change keeps the load balancer name; AWS cannot change a scheme in place, so it must be a new one")
	}
	dual, _ := build(t, testService(func(s *v1.Service) { long(s); annotated(AnnotationIPAddressType, "dualstack")(s) }))
	if dual.LoadBalancer.Name == base.LoadBalancer.Name {
		t.Error("an IP address type change keeps the load balancer name; it must be a new one")
	}
	moved, _ := build(t, testService(func(s *v1.Service) { long(s); s.Spec.Ports[0].NodePort = 30099 }))
	if moved.TargetGroups[0].Name == base.TargetGroups[0].Name || moved.TargetGroups[0].Key != base.TargetGroups[0].Key {
		t.Error("a nodePort change must rename the target group (its port is immutable) and keep its key")
	}
	hc, _ := build(t, testService(func(s *v1.Service) { long(s); annotated(AnnotationHealthCheckInterval, "30")(s) }))
	if hc.TargetGroups[0].Name != base.TargetGroups[0].Name {
		t.Error("a health-check change renames the target group, though AWS modifies it in place")
	}
}

func TestUnknownAnnotations(t *testing.T) {
	got := UnknownAnnotations(map[string]string{
		AnnotationScheme:                     "internal",
		prefix + "healthcheck-success-codes": "200-399",
		prefix + "backend-protocol":          "http",
		"example.com/aws-load-balancer-x":    "y",
	})
	want := []string{prefix + "backend-protocol", prefix + "healthcheck-success-codes"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("UnknownAnnotations = %v, want %v", got, want)
	}
}

func TestParseProviderID(t *testing.T) {
	tests := []struct{ in, zone, id string }{
		{"aws:///eu-west-1a/i-0abc", "eu-west-1a", "i-0abc"},
		{"aws://eu-west-1a/i-0abc", "eu-west-1a", "i-0abc"},
		{"aws:///i-0abc", "", "i-0abc"},
		{"gce://p/z/n", "", ""},
		{"aws:///eu-west-1a/", "", ""},
		{"aws:///a/b/i-1", "", ""},
	}
	for _, tt := range tests {
		zone, id, err := ParseProviderID(tt.in)
		if tt.id == "" {
			if err == nil {
				t.Errorf("ParseProviderID(%q) accepted", tt.in)
			}
			continue
		}
		if err != nil || zone != tt.zone || id != tt.id {
			t.Errorf("ParseProviderID(%q) = %q, %q, %v", tt.in, zone, id, err)
		}
	}
	if ProviderID("eu-west-1a", "i-1") != "aws:///eu-west-1a/i-1" {
		t.Error("ProviderID format")
	}
}

func TestNodeRulesShareTheNodePortRange(t *testing.T) {
	r := DefaultNodePortRange
	tests := []struct {
		name                  string
		protocol, healthCheck string
		port                  int32
		want                  string
	}{
		{"tcp in range", "TCP", "traffic-port", 30080, "[{tcp 30000 32767}]"},
		{"udp checked over tcp", "UDP", "traffic-port", 30053, "[{tcp 30000 32767} {udp 30000 32767}]"},
		{"tcp_udp", "TCP_UDP", "traffic-port", 30053, "[{tcp 30000 32767} {udp 30000 32767}]"},
		{"health check outside the range", "TCP", "10256", 30080, "[{tcp 30000 32767} {tcp 10256 10256}]"},
		{"local health check in range", "TCP", "32100", 30080, "[{tcp 30000 32767}]"},
	}
	for _, tt := range tests {
		got := fmt.Sprint(SortRules(NodeRules(tt.protocol, tt.port, tt.healthCheck, r)))
		if tt.name == "health check outside the range" {
			got = fmt.Sprint(NodeRules(tt.protocol, tt.port, tt.healthCheck, r))
		}
		if got != tt.want {
			t.Errorf("%s: NodeRules = %s, want %s", tt.name, got, tt.want)
		}
	}
}
