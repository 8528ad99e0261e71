package build

import (
	"slices"
	"strconv"
	"strings"

	"github.com/heraldlb/herald/aws/model"
)

// settings are a Service's AWS annotations, parsed and validated.
type settings struct {
	scheme         string
	ipAddressType  string
	name           string
	subnets        []string
	eips           []string
	privateIPs     []string
	securityGroups []string
	extraTags      map[string]string
	lbAttributes   map[string]string
	tgAttributes   map[string]string
	healthCheck    healthCheckSettings
	certificates   []string
	sslPorts       []string // port numbers or names; empty with certificates means all
	sslPolicy      string
	nodeLabels     map[string]string
}

type healthCheckSettings struct {
	protocol, port, path string
	protocolSet, portSet bool
	interval, timeout    int32
	healthy, unhealthy   int32
}

// Limits of NLB health checks (ELBv2 API reference, CreateTargetGroup).
const (
	defaultInterval  = 10
	defaultTimeout   = 6
	defaultThreshold = 3
)

// lbAttributeKeys and tgAttributeKeys are the NLB attributes AWS accepts;
// anything else would fail at AWS with a ValidationError after other
// resources were already created, so it is refused up front.
var lbAttributeKeys = []string{
	"access_logs.s3.enabled", "access_logs.s3.bucket", "access_logs.s3.prefix",
	"deletion_protection.enabled", "dns_record.client_routing_policy",
	"ipv6.deny_all_igw_traffic", "load_balancing.cross_zone.enabled", "zonal_shift.config.enabled",
}

var tgAttributeKeys = []string{
	"deregistration_delay.timeout_seconds", "deregistration_delay.connection_termination.enabled",
	"preserve_client_ip.enabled", "proxy_protocol_v2.enabled", "stickiness.enabled", "stickiness.type",
	"load_balancing.cross_zone.enabled", "target_health_state.unhealthy.connection_termination.enabled",
	"target_health_state.unhealthy.draining_interval_seconds",
	"target_group_health.dns_failover.minimum_healthy_targets.count",
	"target_group_health.dns_failover.minimum_healthy_targets.percentage",
	"target_group_health.unhealthy_state_routing.minimum_healthy_targets.count",
	"target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage",
}

// parseSettings reads every annotation; the first invalid one is returned
// as a *service.AnnotationError naming it.
func parseSettings(a map[string]string) (*settings, error) {
	s := &settings{}
	steps := []func(map[string]string) error{
		s.parseKind, s.parseScheme, s.parseAddressing, s.parseNaming,
		s.parseAttributes, s.parseHealthCheck, s.parseTLS,
	}
	for _, step := range steps {
		if err := step(a); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *settings) parseKind(a map[string]string) error {
	// "external" is aws-lbc's spelling; "nlb-ip" its deprecated one, whose
	// ip targets herald does not provide.
	if _, err := oneOf(a, AnnotationType, "nlb", "nlb", "external"); err != nil {
		return err
	}
	_, err := oneOf(a, AnnotationTargetType, model.TargetTypeInstance, model.TargetTypeInstance)
	if err != nil {
		v, _ := lookup(a, AnnotationTargetType)
		if strings.EqualFold(v, model.TargetTypeIP) {
			return invalid(AnnotationTargetType, v, "ip targets are not supported yet: herald targets the nodes' NodePorts (instance)")
		}
	}
	return err
}

func (s *settings) parseScheme(a map[string]string) error {
	scheme, err := oneOf(a, AnnotationScheme, "", model.SchemeInternetFacing, model.SchemeInternal)
	if err != nil {
		return err
	}
	internal, internalSet, err := boolean(a, AnnotationInternal)
	if err != nil {
		return err
	}
	legacy := model.SchemeInternetFacing
	if internal {
		legacy = model.SchemeInternal
	}
	switch {
	case scheme != "" && internalSet && scheme != legacy:
		return invalid(AnnotationScheme, scheme, "contradicts %s=%q; set only one", AnnotationInternal, a[AnnotationInternal])
	case scheme == "":
		scheme = legacy
	}
	s.scheme = scheme
	s.ipAddressType, err = oneOf(a, AnnotationIPAddressType, model.IPAddressTypeIPv4, model.IPAddressTypeIPv4, model.IPAddressTypeDualStack)
	return err
}

func (s *settings) parseAddressing(a map[string]string) error {
	var err error
	if s.subnets, err = list(a, AnnotationSubnets); err != nil {
		return err
	}
	if s.eips, err = list(a, AnnotationEIPAllocations); err != nil {
		return err
	}
	if s.privateIPs, err = ipv4List(a, AnnotationPrivateIPv4Addresses); err != nil {
		return err
	}
	switch {
	case len(s.eips) > 0 && s.scheme != model.SchemeInternetFacing:
		return invalid(AnnotationEIPAllocations, a[AnnotationEIPAllocations], "only an internet-facing load balancer has Elastic IPs")
	case len(s.privateIPs) > 0 && s.scheme != model.SchemeInternal:
		return invalid(AnnotationPrivateIPv4Addresses, a[AnnotationPrivateIPv4Addresses], "only an internal load balancer has fixed private addresses")
	case len(s.eips) > 0 && len(s.eips) != len(s.subnets):
		return invalid(AnnotationEIPAllocations, a[AnnotationEIPAllocations], "needs one allocation per subnet in %s (%d)", AnnotationSubnets, len(s.subnets))
	case len(s.privateIPs) > 0 && len(s.privateIPs) != len(s.subnets):
		return invalid(AnnotationPrivateIPv4Addresses, a[AnnotationPrivateIPv4Addresses], "needs one address per subnet in %s (%d)", AnnotationSubnets, len(s.subnets))
	}
	for _, id := range s.eips {
		if !strings.HasPrefix(id, "eipalloc-") {
			return invalid(AnnotationEIPAllocations, a[AnnotationEIPAllocations], "%q is not an allocation ID (eipalloc-…)", id)
		}
	}
	s.securityGroups, err = list(a, AnnotationSecurityGroups)
	return err
}

func (s *settings) parseNaming(a map[string]string) error {
	if name, ok := lookup(a, AnnotationName); ok {
		if why := ValidLoadBalancerName(name); why != "" {
			return invalid(AnnotationName, name, "%s", why)
		}
		s.name = name
	}
	var err error
	if s.extraTags, err = keyValues(a, AnnotationAdditionalTags); err != nil {
		return err
	}
	if why := checkTags(s.extraTags); why != "" {
		return invalid(AnnotationAdditionalTags, a[AnnotationAdditionalTags], "%s", why)
	}
	if s.nodeLabels, err = keyValues(a, AnnotationTargetNodeLabels); err != nil {
		return err
	}
	return nil
}

func (s *settings) parseAttributes(a map[string]string) error {
	var err error
	if s.lbAttributes, err = attributes(a, AnnotationAttributes, lbAttributeKeys); err != nil {
		return err
	}
	if v := s.lbAttributes["deletion_protection.enabled"]; v == "true" {
		return invalid(AnnotationAttributes, a[AnnotationAttributes], "deletion_protection.enabled=true would stop herald from deleting the load balancer with its Service")
	}
	crossZone, set, err := boolean(a, AnnotationCrossZone)
	if err != nil {
		return err
	}
	if set {
		want := strconv.FormatBool(crossZone)
		if got, ok := s.lbAttributes["load_balancing.cross_zone.enabled"]; ok && got != want {
			return invalid(AnnotationCrossZone, a[AnnotationCrossZone], "contradicts load_balancing.cross_zone.enabled=%s in %s", got, AnnotationAttributes)
		}
		if s.lbAttributes == nil {
			s.lbAttributes = map[string]string{}
		}
		s.lbAttributes["load_balancing.cross_zone.enabled"] = want
	}
	if s.tgAttributes, err = attributes(a, AnnotationTargetGroupAttributes, tgAttributeKeys); err != nil {
		return err
	}
	if v, ok := lookup(a, AnnotationProxyProtocol); ok {
		if v != "*" {
			return invalid(AnnotationProxyProtocol, v, `only "*" (every target group) is supported`)
		}
		if got, ok := s.tgAttributes["proxy_protocol_v2.enabled"]; ok && got != "true" {
			return invalid(AnnotationProxyProtocol, v, "contradicts proxy_protocol_v2.enabled=%s in %s", got, AnnotationTargetGroupAttributes)
		}
		if s.tgAttributes == nil {
			s.tgAttributes = map[string]string{}
		}
		s.tgAttributes["proxy_protocol_v2.enabled"] = "true"
	}
	return nil
}

func attributes(a map[string]string, key string, allowed []string) (map[string]string, error) {
	kv, err := keyValues(a, key)
	if err != nil {
		return nil, err
	}
	for k, v := range kv {
		if !slices.Contains(allowed, k) {
			return nil, invalid(key, a[key], "unknown attribute %q for a network load balancer", k)
		}
		if v == "" {
			return nil, invalid(key, a[key], "attribute %q has no value", k)
		}
	}
	return kv, nil
}

func (s *settings) parseHealthCheck(a map[string]string) error {
	hc := &s.healthCheck
	var err error
	_, hc.protocolSet = lookup(a, AnnotationHealthCheckProtocol)
	if hc.protocol, err = oneOf(a, AnnotationHealthCheckProtocol, "", "TCP", "HTTP", "HTTPS"); err != nil {
		return err
	}
	if v, ok := lookup(a, AnnotationHealthCheckPort); ok {
		if n, perr := strconv.Atoi(v); v != "traffic-port" && (perr != nil || n < 1 || n > 65535) {
			return invalid(AnnotationHealthCheckPort, v, `not "traffic-port" or a port from 1 to 65535`)
		}
		hc.port, hc.portSet = v, true
	}
	if v, ok := lookup(a, AnnotationHealthCheckPath); ok {
		if !strings.HasPrefix(v, "/") || len(v) > 1024 {
			return invalid(AnnotationHealthCheckPath, v, `must start with "/" and be at most 1024 characters`)
		}
		hc.path = v
	}
	if hc.interval, err = integer(a, AnnotationHealthCheckInterval, 5, 300, defaultInterval); err != nil {
		return err
	}
	if hc.timeout, err = integer(a, AnnotationHealthCheckTimeout, 2, 120, defaultTimeout); err != nil {
		return err
	}
	if hc.timeout >= hc.interval {
		return invalid(AnnotationHealthCheckTimeout, strconv.Itoa(int(hc.timeout)), "must be shorter than the interval (%ds)", hc.interval)
	}
	if hc.healthy, err = integer(a, AnnotationHealthyThreshold, 2, 10, defaultThreshold); err != nil {
		return err
	}
	hc.unhealthy, err = integer(a, AnnotationUnhealthyThreshold, 2, 10, defaultThreshold)
	return err
}

func (s *settings) parseTLS(a map[string]string) error {
	var err error
	if s.certificates, err = list(a, AnnotationSSLCert); err != nil {
		return err
	}
	for _, c := range s.certificates {
		if !strings.HasPrefix(c, "arn:") {
			return invalid(AnnotationSSLCert, a[AnnotationSSLCert], "%q is not a certificate ARN", c)
		}
	}
	if s.sslPorts, err = list(a, AnnotationSSLPorts); err != nil {
		return err
	}
	if len(s.sslPorts) > 0 && len(s.certificates) == 0 {
		return invalid(AnnotationSSLPorts, a[AnnotationSSLPorts], "needs %s", AnnotationSSLCert)
	}
	s.sslPolicy, _ = lookup(a, AnnotationSSLNegotiationPolicy)
	if s.sslPolicy != "" && len(s.certificates) == 0 {
		return invalid(AnnotationSSLNegotiationPolicy, s.sslPolicy, "needs %s", AnnotationSSLCert)
	}
	return nil
}

// checkTags enforces AWS's tag rules on user tags and keeps herald's own
// keys herald's: a user tag overriding the ownership tags would orphan
// the resources.
func checkTags(tags map[string]string) string {
	if len(tags) > maxUserTags {
		return "more than " + strconv.Itoa(maxUserTags) + " tags (AWS allows 50 per resource, herald uses the rest)"
	}
	for k, v := range tags {
		switch {
		case len(k) > 128:
			return "tag key " + strconv.Quote(k) + " is longer than 128 characters"
		case len(v) > 256:
			return "value of tag " + strconv.Quote(k) + " is longer than 256 characters"
		case strings.HasPrefix(strings.ToLower(k), "aws:"):
			return "tag key " + strconv.Quote(k) + " uses the reserved aws: prefix"
		case strings.HasPrefix(k, TagPrefix) || strings.HasPrefix(k, "kubernetes.io/cluster/"):
			return "tag key " + strconv.Quote(k) + " is herald's own"
		}
	}
	return ""
}
