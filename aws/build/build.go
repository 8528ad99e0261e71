// Package build turns a Service (as provider/service describes it) and its
// Nodes into the desired AWS stack of aws/model. It is pure: every
// annotation is validated here, before any AWS call, and an invalid one is
// a *service.AnnotationError naming it.
package build

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/heraldlb/herald/aws/model"
	"github.com/heraldlb/herald/provider/service"
)

// Tags herald puts on everything it creates. TagCluster is the ownership
// tag: resources are listed by it, and nothing without it is ever changed.
const (
	TagPrefix       = "herald.dev/"
	TagCluster      = TagPrefix + "cluster"
	TagService      = TagPrefix + "service"
	TagServiceUID   = TagPrefix + "service-uid"
	TagLoadBalancer = TagPrefix + "load-balancer"
	TagPort         = TagPrefix + "port"
	// ownTags counts the tags above plus kubernetes.io/cluster/<name>.
	ownTags     = 6
	maxUserTags = 50 - ownTags
)

// LabelExcludeFromLB is the standard label that keeps a node out of
// external load balancers.
const LabelExcludeFromLB = v1.LabelNodeExcludeBalancers

// DefaultSSLPolicy is the TLS policy of TLS listeners (AWS's recommended one).
const DefaultSSLPolicy = "ELBSecurityPolicy-TLS13-1-2-2021-06"

// Options are cluster-wide inputs.
type Options struct {
	// ClusterName goes into names and ownership tags.
	ClusterName string
	// Tags are added to every resource (the cloud config's).
	Tags map[string]string
	// NodePortRange is the apiserver's --service-node-port-range; zero
	// means the default 30000-32767.
	NodePortRange PortRange
}

// PortRange is an inclusive range of ports.
type PortRange struct{ From, To int32 }

// DefaultNodePortRange is kube-apiserver's default --service-node-port-range.
var DefaultNodePortRange = PortRange{From: 30000, To: 32767}

func (r PortRange) contains(p int32) bool { return p >= r.From && p <= r.To }

// ClusterTagKey is the tag AWS tooling (and cloud-provider-aws) reads as
// "belongs to this Kubernetes cluster".
func ClusterTagKey(cluster string) string { return "kubernetes.io/cluster/" + cluster }

// Build returns the stack lb needs.
func Build(lb *service.LoadBalancer, opts Options) (*model.Stack, error) {
	s, err := parseSettings(lb.Annotations)
	if err != nil {
		return nil, err
	}
	if len(lb.Ports) == 0 {
		return nil, &service.SpecError{Field: "ports", Reason: "a load balancer needs at least one port"}
	}
	base := ownership(opts, lb)
	lbName := s.name
	if lbName == "" {
		// Scheme and IP address type are fixed at creation for our purposes
		// (AWS cannot change a scheme): a change makes a new name, so the
		// new NLB can exist beside the old one until the status moves.
		lbName = resourceName(lb.Service.Namespace, lb.Service.Name, opts.ClusterName, lb.Key(), string(lb.UID), s.scheme, s.ipAddressType)
	}
	stack := &model.Stack{
		ServiceKey: lb.Key(),
		ServiceUID: string(lb.UID),
		LoadBalancer: model.LoadBalancer{
			Name:           lbName,
			Scheme:         s.scheme,
			IPAddressType:  s.ipAddressType,
			Subnets:        subnetSelection(s),
			SecurityGroups: s.securityGroups,
			Attributes:     s.lbAttributes,
			Tags:           withTags(base, s.extraTags, opts.Tags, map[string]string{TagLoadBalancer: lbName}),
		},
	}
	listeners, err := listenerPorts(lb.Ports, s)
	if err != nil {
		return nil, err
	}
	targets := targetsOf(lb.Nodes(), s.nodeLabels)
	for _, l := range listeners {
		tg := targetGroup(lb, s, l, lbName, targets, opts)
		tg.Tags = withTags(base, s.extraTags, opts.Tags, map[string]string{TagLoadBalancer: lbName, TagPort: tg.Key})
		stack.TargetGroups = append(stack.TargetGroups, tg)
		listener := model.Listener{Port: l.port, Protocol: l.protocol, TargetGroup: tg.Key}
		if l.protocol == "TLS" {
			listener.Certificates = s.certificates
			listener.SSLPolicy = cmp.Or(s.sslPolicy, DefaultSSLPolicy)
		}
		stack.Listeners = append(stack.Listeners, listener)
	}
	if len(s.securityGroups) == 0 {
		stack.Frontend = frontend(lb, s, listeners, lbName, withTags(base, s.extraTags, opts.Tags, map[string]string{TagLoadBalancer: lbName}))
		portRange := opts.NodePortRange
		if portRange == (PortRange{}) {
			portRange = DefaultNodePortRange
		}
		for _, tg := range stack.TargetGroups {
			stack.NodeRules = append(stack.NodeRules, NodeRules(tg.Protocol, tg.Port, tg.HealthCheck.Port, portRange)...)
		}
		stack.NodeRules = SortRules(stack.NodeRules)
	}
	return stack, nil
}

func ownership(opts Options, lb *service.LoadBalancer) map[string]string {
	return map[string]string{
		TagCluster:                      opts.ClusterName,
		ClusterTagKey(opts.ClusterName): "owned",
		TagService:                      lb.Key(),
		TagServiceUID:                   string(lb.UID),
	}
}

// withTags merges tag sets; later sets win, and herald's ownership tags
// (the first set and the last) cannot be overridden (checkTags refuses
// user tags with those keys).
func withTags(sets ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, set := range sets {
		for k, v := range set {
			out[k] = v
		}
	}
	return out
}

func subnetSelection(s *settings) model.SubnetSelection {
	sel := model.SubnetSelection{IDsOrNames: s.subnets, EIPAllocations: s.eips, PrivateIPv4Addresses: s.privateIPs}
	if len(s.subnets) == 0 {
		sel.DiscoverRoleTag = "kubernetes.io/role/elb"
		if s.scheme == model.SchemeInternal {
			sel.DiscoverRoleTag = "kubernetes.io/role/internal-elb"
		}
	}
	return sel
}

// listenerPort is one NLB listener before target groups exist.
type listenerPort struct {
	port, nodePort int32
	protocol       string // TCP, UDP, TCP_UDP, TLS
	name           string
}

// listenerPorts maps Service ports to listeners. TCP and UDP on one port
// become a TCP_UDP listener, as an NLB cannot have two listeners on a port;
// that needs one NodePort for both.
func listenerPorts(ports []service.Port, s *settings) ([]listenerPort, error) {
	byPort := map[int32]*listenerPort{}
	for _, p := range ports {
		var proto string
		switch p.Protocol {
		case v1.ProtocolTCP, "":
			proto = "TCP"
			if isSSLPort(s, p) {
				proto = "TLS"
			}
		case v1.ProtocolUDP:
			proto = "UDP"
		default:
			return nil, &service.SpecError{Field: "ports", Value: string(p.Protocol),
				Reason: "a network load balancer supports TCP and UDP only"}
		}
		if p.NodePort == 0 {
			return nil, &service.SpecError{Field: "ports", Value: strconv.Itoa(int(p.Port)),
				Reason: "no nodePort allocated (allocateLoadBalancerNodePorts: false is not supported by instance targets)"}
		}
		prev, ok := byPort[p.Port]
		if !ok {
			byPort[p.Port] = &listenerPort{port: p.Port, nodePort: p.NodePort, protocol: proto, name: p.Name}
			continue
		}
		tcpAndUDP := prev.protocol == "TCP" && proto == "UDP" || prev.protocol == "UDP" && proto == "TCP"
		if prev.nodePort != p.NodePort || !tcpAndUDP {
			return nil, &service.SpecError{Field: "ports", Value: strconv.Itoa(int(p.Port)),
				Reason: "TCP and UDP on one port need the same nodePort (they share a TCP_UDP listener)"}
		}
		prev.protocol = "TCP_UDP"
	}
	out := make([]listenerPort, 0, len(byPort))
	for _, l := range byPort {
		out = append(out, *l)
	}
	slices.SortFunc(out, func(a, b listenerPort) int { return cmp.Compare(a.port, b.port) })
	return out, nil
}

func isSSLPort(s *settings, p service.Port) bool {
	if len(s.certificates) == 0 {
		return false
	}
	if len(s.sslPorts) == 0 || slices.Contains(s.sslPorts, "*") {
		return true
	}
	return slices.Contains(s.sslPorts, strconv.Itoa(int(p.Port))) || p.Name != "" && slices.Contains(s.sslPorts, p.Name)
}

func targetGroup(lb *service.LoadBalancer, s *settings, l listenerPort, lbName string, targets []string, opts Options) model.TargetGroup {
	protocol := l.protocol
	if protocol == "TLS" {
		protocol = "TCP" // TLS ends at the NLB; the NodePort speaks plain TCP
	}
	key := strings.ToLower(protocol) + "-" + strconv.Itoa(int(l.port))
	tg := model.TargetGroup{
		Key:           key,
		Protocol:      protocol,
		Port:          l.nodePort,
		TargetType:    model.TargetTypeInstance,
		IPAddressType: model.IPAddressTypeIPv4,
		HealthCheck:   healthCheck(lb, s),
		Attributes:    s.tgAttributes,
	}
	// Everything CreateTargetGroup fixes for good is in the name, so a
	// change of any of them yields a new group (created, switched to, and
	// only then the old one deleted).
	tg.Name = resourceName(lb.Service.Namespace, lb.Service.Name, opts.ClusterName, lbName, key,
		tg.Protocol, strconv.Itoa(int(tg.Port)), tg.TargetType, tg.IPAddressType)
	for _, id := range targets {
		tg.Targets = append(tg.Targets, model.Target{ID: id, Port: l.nodePort})
	}
	if tg.Targets == nil {
		tg.Targets = []model.Target{}
	}
	return tg
}

// healthCheck follows the Service's traffic policy: with Local, only nodes
// with a ready endpoint answer kube-proxy's (or herald-agent's)
// healthCheckNodePort, so the NLB sends traffic only there.
func healthCheck(lb *service.LoadBalancer, s *settings) model.HealthCheck {
	a := s.healthCheck
	hc := model.HealthCheck{Protocol: "TCP", Port: "traffic-port", IntervalSeconds: a.interval,
		TimeoutSeconds: a.timeout, HealthyThreshold: a.healthy, UnhealthyThreshold: a.unhealthy}
	if lb.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal && lb.HealthCheckNodePort != 0 {
		hc.Protocol, hc.Port, hc.Path = "HTTP", strconv.Itoa(int(lb.HealthCheckNodePort)), "/healthz"
	}
	if a.protocolSet {
		hc.Protocol = a.protocol
	}
	if a.portSet {
		hc.Port = a.port
	}
	switch {
	case hc.Protocol == "TCP":
		hc.Path = ""
	case a.path != "":
		hc.Path = a.path
	case hc.Path == "":
		hc.Path = "/"
	}
	return hc
}

// targetsOf returns the instance IDs of the nodes that take traffic:
// those with an AWS provider ID, without the exclusion label, and matching
// the target-node-labels annotation.
func targetsOf(nodes []service.Node, selector map[string]string) []string {
	var out []string
	for _, n := range nodes {
		if _, excluded := n.Labels[LabelExcludeFromLB]; excluded {
			continue
		}
		if !matches(n.Labels, selector) {
			continue
		}
		if _, id, err := ParseProviderID(n.ProviderID); err == nil {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func matches(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// ParseProviderID splits "aws:///<zone>/<instance-id>" (also the
// "aws://<zone>/<id>" and bare-ID forms kubelets have written).
func ParseProviderID(providerID string) (zone, instanceID string, err error) {
	rest, ok := strings.CutPrefix(providerID, "aws://")
	if !ok {
		return "", "", fmt.Errorf("provider ID %q is not aws://", providerID)
	}
	parts := strings.Split(strings.TrimPrefix(rest, "/"), "/")
	id := parts[len(parts)-1]
	if !strings.HasPrefix(id, "i-") || len(parts) > 2 {
		return "", "", fmt.Errorf("provider ID %q has no instance ID", providerID)
	}
	if len(parts) == 2 {
		zone = parts[0]
	}
	return zone, id, nil
}

// ProviderID is the canonical provider ID of an instance.
func ProviderID(zone, instanceID string) string { return "aws:///" + zone + "/" + instanceID }

func frontend(lb *service.LoadBalancer, s *settings, listeners []listenerPort, lbName string, tags map[string]string) *model.SecurityGroup {
	ranges := lb.SourceRanges
	if len(ranges) == 0 {
		ranges = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
		if s.ipAddressType == model.IPAddressTypeDualStack {
			ranges = append(ranges, netip.MustParsePrefix("::/0"))
		}
	}
	sg := &model.SecurityGroup{Name: lbName, Description: "herald frontend for " + lb.Key(), Tags: tags}
	for _, l := range listeners {
		for _, proto := range sgProtocols(l.protocol) {
			for _, r := range ranges {
				sg.Ingress = append(sg.Ingress, model.Rule{Protocol: proto, FromPort: l.port, ToPort: l.port, CIDR: r.String()})
			}
		}
	}
	return sg
}

func sgProtocols(listenerProtocol string) []string {
	switch listenerProtocol {
	case "UDP":
		return []string{"udp"}
	case "TCP_UDP":
		return []string{"tcp", "udp"}
	}
	return []string{"tcp"}
}

// NodeRules are the node-group rules one target group needs: its traffic
// port for each protocol, and its health-check port over TCP. A port in
// the NodePort range opens the whole range, so all Services share one rule
// per protocol; a port outside it (a health-check-port annotation) gets
// its own.
func NodeRules(tgProtocol string, port int32, healthCheckPort string, nodePorts PortRange) []model.NodeRule {
	rule := func(proto string, p int32) model.NodeRule {
		if nodePorts.contains(p) {
			return model.NodeRule{Protocol: proto, FromPort: nodePorts.From, ToPort: nodePorts.To}
		}
		return model.NodeRule{Protocol: proto, FromPort: p, ToPort: p}
	}
	var out []model.NodeRule
	for _, proto := range sgProtocols(tgProtocol) {
		out = append(out, rule(proto, port))
	}
	hcPort := port
	if n, err := strconv.Atoi(healthCheckPort); err == nil {
		hcPort = int32(n)
	}
	return append(out, rule("tcp", hcPort))
}

// SortRules sorts and deduplicates rules.
func SortRules(rules []model.NodeRule) []model.NodeRule {
	slices.SortFunc(rules, func(a, b model.NodeRule) int {
		return cmp.Or(cmp.Compare(a.FromPort, b.FromPort), cmp.Compare(a.ToPort, b.ToPort), cmp.Compare(a.Protocol, b.Protocol))
	})
	return slices.Compact(rules)
}

// BackendRuleDescription marks the node security-group rules herald
// manages for a cluster (characters EC2 allows in descriptions).
func BackendRuleDescription(cluster string) string {
	return "herald.dev/cluster=" + cluster + ";backend"
}

// TagRole marks the cluster's shared backend security group.
const (
	TagRole     = TagPrefix + "role"
	RoleBackend = "backend"
)

// BackendGroup is the cluster's shared backend security group: every
// herald NLB carries it, and the nodes admit it on the NodePorts.
func BackendGroup(opts Options) *model.SecurityGroup {
	tags := withTags(opts.Tags, map[string]string{TagCluster: opts.ClusterName, ClusterTagKey(opts.ClusterName): "owned",
		TagRole: RoleBackend})
	return &model.SecurityGroup{Name: "herald-backend-" + opts.ClusterName,
		Description: "herald NLBs of cluster " + opts.ClusterName + " to the nodes' NodePorts", Tags: tags}
}
