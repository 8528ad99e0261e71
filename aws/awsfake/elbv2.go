package awsfake

import (
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

var elbv2Handlers = map[string]func(*Server, url.Values) (*node, *Error){
	"DescribeLoadBalancers":          (*Server).describeLoadBalancers,
	"CreateLoadBalancer":             (*Server).createLoadBalancer,
	"DeleteLoadBalancer":             (*Server).deleteLoadBalancer,
	"DescribeLoadBalancerAttributes": (*Server).describeLoadBalancerAttributes,
	"ModifyLoadBalancerAttributes":   (*Server).modifyLoadBalancerAttributes,
	"SetSecurityGroups":              (*Server).setSecurityGroups,
	"DescribeTags":                   (*Server).describeTags,
	"AddTags":                        (*Server).addTags,
	"RemoveTags":                     (*Server).removeTags,
	"DescribeListeners":              (*Server).describeListeners,
	"CreateListener":                 (*Server).createListener,
	"ModifyListener":                 (*Server).modifyListener,
	"DeleteListener":                 (*Server).deleteListener,
	"DescribeTargetGroups":           (*Server).describeTargetGroups,
	"CreateTargetGroup":              (*Server).createTargetGroup,
	"ModifyTargetGroup":              (*Server).modifyTargetGroup,
	"DeleteTargetGroup":              (*Server).deleteTargetGroup,
	"DescribeTargetGroupAttributes":  (*Server).describeTargetGroupAttributes,
	"ModifyTargetGroupAttributes":    (*Server).modifyTargetGroupAttributes,
	"DescribeTargetHealth":           (*Server).describeTargetHealth,
	"RegisterTargets":                (*Server).registerTargets,
	"DeregisterTargets":              (*Server).deregisterTargets,
}

// validName is AWS's rule for load balancer and target group names.
func validName(name string) bool {
	if name == "" || len(name) > 32 || strings.HasPrefix(name, "-") || strings.HasSuffix(name, "-") {
		return false
	}
	return strings.IndexFunc(name, func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '-'
	}) < 0
}

func (s *Server) arn(kind, name string) string {
	return "arn:aws:elasticloadbalancing:" + s.Region + ":" + s.Account + ":" + kind + "/" + name + "/" + s.newID("")[1:]
}

func (s *Server) createLoadBalancer(p url.Values) (*node, *Error) {
	name := p.Get("Name")
	switch {
	case !validName(name):
		return nil, errorf("ValidationError", "The load balancer name '%s' is not valid", name)
	case strings.HasPrefix(strings.ToLower(name), "internal-"):
		return nil, errorf("ValidationError", "Load balancer names cannot start with 'internal-'")
	case p.Get("Type") != "network":
		return nil, errorf("ValidationError", "the fake only provides network load balancers")
	}
	scheme := cmpOr(p.Get("Scheme"), "internet-facing")
	if scheme != "internet-facing" && scheme != "internal" {
		return nil, errorf("InvalidScheme", "The scheme '%s' is not valid", scheme)
	}
	want := &loadBalancer{name: name, scheme: scheme, lbType: "network", ipType: cmpOr(p.Get("IpAddressType"), "ipv4"),
		groups: members(p, "SecurityGroups", false), attrs: defaultLBAttributes()}
	for _, id := range members(p, "Subnets", false) {
		want.subnets = append(want.subnets, subnetMapping{subnet: id})
	}
	for _, pre := range structs(p, "SubnetMappings.member") {
		want.subnets = append(want.subnets, subnetMapping{subnet: p.Get(pre + "SubnetId"),
			allocation: p.Get(pre + "AllocationId"), privateIP: p.Get(pre + "PrivateIPv4Address")})
	}
	if err := s.checkLBPlacement(want); err != nil {
		return nil, err
	}
	tags, err := requestTags(p)
	if err != nil {
		return nil, err
	}
	for _, lb := range s.lbs {
		if lb.name != name {
			continue
		}
		// Same name and settings: AWS answers with the existing one.
		if lb.scheme == want.scheme && lb.ipType == want.ipType && slices.Equal(lb.subnets, want.subnets) &&
			slices.Equal(lb.groups, want.groups) {
			return el("", list("LoadBalancers", "member", []*node{lbNode(lb)})), nil
		}
		return nil, errorf("DuplicateLoadBalancerName", "A load balancer with the same name '%s' exists, but with different settings", name)
	}
	want.arn = s.arn("loadbalancer/net", name)
	suffix := want.arn[strings.LastIndex(want.arn, "/")+1:]
	want.dns = name + "-" + suffix[:10] + ".elb." + s.Region + ".amazonaws.com"
	if scheme == "internal" {
		want.dns = "internal-" + want.dns
	}
	want.tags = tags
	s.lbs[want.arn] = want
	return el("", list("LoadBalancers", "member", []*node{lbNode(want)})), nil
}

func (s *Server) checkLBPlacement(lb *loadBalancer) *Error {
	if len(lb.subnets) == 0 {
		return errorf("ValidationError", "At least one subnet must be specified")
	}
	zones := map[string]bool{}
	for _, m := range lb.subnets {
		sn, ok := s.subnets[m.subnet]
		if !ok {
			return errorf("SubnetNotFound", "The subnet ID '%s' is not valid", m.subnet)
		}
		if zones[sn.zone] {
			return errorf("InvalidConfigurationRequest", "A load balancer cannot be attached to multiple subnets in the same Availability Zone")
		}
		zones[sn.zone] = true
		if m.allocation != "" && !strings.HasPrefix(m.allocation, "eipalloc-") {
			return errorf("AllocationIdNotFound", "The allocation ID '%s' does not exist", m.allocation)
		}
	}
	for _, g := range lb.groups {
		if _, ok := s.groups[g]; !ok {
			return errorf("InvalidSecurityGroup", "The security group '%s' does not exist", g)
		}
	}
	return nil
}

func defaultLBAttributes() map[string]string {
	return map[string]string{"deletion_protection.enabled": "false", "load_balancing.cross_zone.enabled": "false",
		"access_logs.s3.enabled": "false", "access_logs.s3.bucket": "", "access_logs.s3.prefix": "",
		"dns_record.client_routing_policy": "any_availability_zone", "ipv6.deny_all_igw_traffic": "false",
		"zonal_shift.config.enabled": "false"}
}

func lbNode(lb *loadBalancer) *node {
	lb.describes++
	state := "active"
	if lb.describes == 1 {
		state = "provisioning"
	}
	var zones []*node
	for _, m := range lb.subnets {
		zones = append(zones, el("", leaf("SubnetId", m.subnet)))
	}
	var groups []*node
	for _, g := range lb.groups {
		groups = append(groups, leaf("", g))
	}
	return el("", leaf("LoadBalancerArn", lb.arn), leaf("LoadBalancerName", lb.name), leaf("DNSName", lb.dns),
		leaf("Scheme", lb.scheme), leaf("Type", lb.lbType), leaf("IpAddressType", lb.ipType),
		leaf("VpcId", "vpc-0fake00000000000"), el("State", leaf("Code", state)),
		list("AvailabilityZones", "member", zones), list("SecurityGroups", "member", groups))
}

func (s *Server) describeLoadBalancers(p url.Values) (*node, *Error) {
	names, arns := members(p, "Names", false), members(p, "LoadBalancerArns", false)
	var found []*loadBalancer
	for _, arn := range sortedKeys(s.lbs) {
		lb := s.lbs[arn]
		if (len(names) == 0 || slices.Contains(names, lb.name)) && (len(arns) == 0 || slices.Contains(arns, arn)) {
			found = append(found, lb)
		}
	}
	if len(found) < len(names)+len(arns) {
		return nil, errorf("LoadBalancerNotFound", "One or more load balancers not found")
	}
	size := s.PageSize
	if ps, err := strconv.Atoi(p.Get("PageSize")); err == nil && ps < size {
		size = ps
	}
	ids := make([]string, len(found))
	for i, lb := range found {
		ids[i] = lb.arn
	}
	pageIDs, next := page(ids, p.Get("Marker"), size)
	var items []*node
	for _, id := range pageIDs {
		items = append(items, lbNode(s.lbs[id]))
	}
	out := el("", list("LoadBalancers", "member", items))
	if next != "" {
		out.children = append(out.children, leaf("NextMarker", next))
	}
	return out, nil
}

func (s *Server) deleteLoadBalancer(p url.Values) (*node, *Error) {
	arn := p.Get("LoadBalancerArn")
	lb, ok := s.lbs[arn]
	if !ok {
		// AWS: deleting a load balancer that does not exist succeeds.
		return nil, nil
	}
	if lb.attrs["deletion_protection.enabled"] == "true" {
		return nil, errorf("OperationNotPermitted", "Load balancer '%s' cannot be deleted because deletion protection is enabled", arn)
	}
	for id, l := range s.listeners {
		if l.lb == arn {
			delete(s.listeners, id)
		}
	}
	delete(s.lbs, arn)
	return nil, nil
}

func attributeList(attrs map[string]string) *node {
	var items []*node
	for _, k := range sortedKeys(attrs) {
		items = append(items, el("", leaf("Key", k), leaf("Value", attrs[k])))
	}
	return list("Attributes", "member", items)
}

func readAttributes(p url.Values, allowed map[string]string) (map[string]string, *Error) {
	out := map[string]string{}
	for _, pre := range structs(p, "Attributes.member") {
		k := p.Get(pre + "Key")
		if _, ok := allowed[k]; !ok {
			return nil, errorf("ValidationError", "Attribute key '%s' is not recognized", k)
		}
		out[k] = p.Get(pre + "Value")
	}
	if len(out) == 0 {
		return nil, errorf("ValidationError", "Attributes must not be empty")
	}
	return out, nil
}

func (s *Server) describeLoadBalancerAttributes(p url.Values) (*node, *Error) {
	lb, ok := s.lbs[p.Get("LoadBalancerArn")]
	if !ok {
		return nil, errorf("LoadBalancerNotFound", "Load balancer '%s' not found", p.Get("LoadBalancerArn"))
	}
	return el("", attributeList(lb.attrs)), nil
}

func (s *Server) modifyLoadBalancerAttributes(p url.Values) (*node, *Error) {
	lb, ok := s.lbs[p.Get("LoadBalancerArn")]
	if !ok {
		return nil, errorf("LoadBalancerNotFound", "Load balancer '%s' not found", p.Get("LoadBalancerArn"))
	}
	attrs, err := readAttributes(p, lb.attrs)
	if err != nil {
		return nil, err
	}
	maps.Copy(lb.attrs, attrs)
	return el("", attributeList(lb.attrs)), nil
}

func (s *Server) setSecurityGroups(p url.Values) (*node, *Error) {
	lb, ok := s.lbs[p.Get("LoadBalancerArn")]
	if !ok {
		return nil, errorf("LoadBalancerNotFound", "Load balancer '%s' not found", p.Get("LoadBalancerArn"))
	}
	groups := members(p, "SecurityGroups", false)
	if len(lb.groups) == 0 && len(groups) > 0 {
		// AWS: a network load balancer created without security groups
		// can never get any.
		return nil, errorf("InvalidConfigurationRequest", "You cannot set security groups on a Network Load Balancer which was created without any security groups")
	}
	for _, g := range groups {
		if _, ok := s.groups[g]; !ok {
			return nil, errorf("InvalidSecurityGroup", "The security group '%s' does not exist", g)
		}
	}
	lb.groups = groups
	var items []*node
	for _, g := range groups {
		items = append(items, leaf("", g))
	}
	return el("", list("SecurityGroupIds", "member", items)), nil
}

// tagged returns the tag map of an ELBv2 resource, or the error AWS gives
// for a missing one of its kind.
func (s *Server) tagged(arn string) (map[string]string, *Error) {
	if lb, ok := s.lbs[arn]; ok {
		return lb.tags, nil
	}
	if tg, ok := s.tgs[arn]; ok {
		return tg.tags, nil
	}
	if strings.Contains(arn, ":targetgroup/") {
		return nil, errorf("TargetGroupNotFound", "Target group '%s' not found", arn)
	}
	return nil, errorf("LoadBalancerNotFound", "Load balancer '%s' not found", arn)
}

func (s *Server) describeTags(p url.Values) (*node, *Error) {
	arns := members(p, "ResourceArns", false)
	if len(arns) == 0 || len(arns) > 20 {
		return nil, errorf("ValidationError", "ResourceArns must have between 1 and 20 items")
	}
	var items []*node
	for _, arn := range arns {
		tags, err := s.tagged(arn)
		if err != nil {
			return nil, err
		}
		items = append(items, el("", leaf("ResourceArn", arn), tagList("Tags", "member", tags, "Key", "Value")))
	}
	return el("", list("TagDescriptions", "member", items)), nil
}

func (s *Server) addTags(p url.Values) (*node, *Error) {
	add, err := tagsOf(p, "Tags.member")
	if err != nil {
		return nil, err
	}
	for _, arn := range members(p, "ResourceArns", false) {
		tags, err := s.tagged(arn)
		if err != nil {
			return nil, err
		}
		merged := maps.Clone(tags)
		maps.Copy(merged, add)
		if err := checkTags(merged); err != nil {
			return nil, err
		}
		maps.Copy(tags, add)
	}
	return nil, nil
}

func (s *Server) removeTags(p url.Values) (*node, *Error) {
	for _, arn := range members(p, "ResourceArns", false) {
		tags, err := s.tagged(arn)
		if err != nil {
			return nil, err
		}
		for _, k := range members(p, "TagKeys", false) {
			delete(tags, k)
		}
	}
	return nil, nil
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
