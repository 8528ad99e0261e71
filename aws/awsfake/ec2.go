package awsfake

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

var ec2Handlers = map[string]func(*Server, url.Values) (*node, *Error){
	"DescribeSubnets":               (*Server).describeSubnets,
	"DescribeSecurityGroups":        (*Server).describeSecurityGroups,
	"CreateSecurityGroup":           (*Server).createSecurityGroup,
	"DeleteSecurityGroup":           (*Server).deleteSecurityGroup,
	"AuthorizeSecurityGroupIngress": (*Server).authorizeIngress,
	"RevokeSecurityGroupIngress":    (*Server).revokeIngress,
	"CreateTags":                    (*Server).createTags,
	"DeleteTags":                    (*Server).deleteTags,
	"DescribeInstances":             (*Server).describeInstances,
}

type securityGroup struct {
	id, name, description, vpc string
	tags                       map[string]string
	ingress                    []permission
}

// permission is one ingress rule: a port range from one source.
type permission struct {
	protocol           string
	from, to           int
	cidr, cidr6, group string
	description        string
}

func (p permission) String() string {
	return fmt.Sprintf("%s %d-%d from %s%s%s", p.protocol, p.from, p.to, p.cidr, p.cidr6, p.group)
}

// same compares rules as EC2 does: the description is not part of a rule's identity.
func (p permission) same(o permission) bool {
	p.description, o.description = "", ""
	return p == o
}

// filters reads Filter.N.Name / Filter.N.Value.M.
func filters(p url.Values) map[string][]string {
	out := map[string][]string{}
	for _, pre := range structs(p, "Filter") {
		out[p.Get(pre+"Name")] = members(p, pre+"Value", true)
	}
	return out
}

// matchFilters applies the filters herald uses: tag:<key>, tag-key,
// vpc-id, group-name, availability-zone.
func matchFilters(f map[string][]string, tags map[string]string, attrs map[string]string) bool {
	for name, values := range f {
		switch {
		case strings.HasPrefix(name, "tag:"):
			v, ok := tags[strings.TrimPrefix(name, "tag:")]
			if !ok || !slices.Contains(values, v) {
				return false
			}
		case name == "tag-key":
			found := false
			for _, k := range values {
				if _, ok := tags[k]; ok {
					found = true
				}
			}
			if !found {
				return false
			}
		default:
			if !slices.Contains(values, attrs[name]) {
				return false
			}
		}
	}
	return true
}

func (s *Server) describeSubnets(p url.Values) (*node, *Error) {
	ids, f := members(p, "SubnetId", true), filters(p)
	var items []*node
	for _, id := range sortedKeys(s.subnets) {
		sn := s.subnets[id]
		if len(ids) > 0 && !slices.Contains(ids, id) {
			continue
		}
		if !matchFilters(f, sn.tags, map[string]string{"vpc-id": s.vpcID, "availability-zone": sn.zone}) {
			continue
		}
		items = append(items, el("", leaf("subnetId", id), leaf("vpcId", s.vpcID), leaf("availabilityZone", sn.zone),
			leaf("cidrBlock", sn.cidr), leaf("state", "available"), tagList("tagSet", "item", sn.tags, "key", "value")))
	}
	if len(items) < len(ids) {
		return nil, errorf("InvalidSubnetID.NotFound", "The subnet ID does not exist")
	}
	return el("", list("subnetSet", "item", items)), nil
}

func permissionNodes(perms []permission) *node {
	var items []*node
	for _, r := range perms {
		item := el("", leaf("ipProtocol", r.protocol), leaf("fromPort", strconv.Itoa(r.from)), leaf("toPort", strconv.Itoa(r.to)))
		groups, v4, v6 := el("groups"), el("ipRanges"), el("ipv6Ranges")
		switch {
		case r.group != "":
			groups.children = append(groups.children, el("item", leaf("groupId", r.group), leaf("description", r.description)))
		case r.cidr != "":
			v4.children = append(v4.children, el("item", leaf("cidrIp", r.cidr), leaf("description", r.description)))
		default:
			v6.children = append(v6.children, el("item", leaf("cidrIpv6", r.cidr6), leaf("description", r.description)))
		}
		item.children = append(item.children, groups, v4, v6)
		items = append(items, item)
	}
	return list("ipPermissions", "item", items)
}

func (s *Server) describeSecurityGroups(p url.Values) (*node, *Error) {
	ids, names, f := members(p, "GroupId", true), members(p, "GroupName", true), filters(p)
	var items []*node
	for _, id := range sortedKeys(s.groups) {
		g := s.groups[id]
		if len(ids) > 0 && !slices.Contains(ids, id) || len(names) > 0 && !slices.Contains(names, g.name) {
			continue
		}
		if !matchFilters(f, g.tags, map[string]string{"vpc-id": g.vpc, "group-name": g.name}) {
			continue
		}
		items = append(items, el("", leaf("groupId", id), leaf("groupName", g.name), leaf("groupDescription", g.description),
			leaf("vpcId", g.vpc), leaf("ownerId", s.Account), permissionNodes(g.ingress), tagList("tagSet", "item", g.tags, "key", "value")))
	}
	if len(items) < len(ids)+len(names) {
		return nil, errorf("InvalidGroup.NotFound", "The security group does not exist")
	}
	return el("", list("securityGroupInfo", "item", items)), nil
}

func (s *Server) createSecurityGroup(p url.Values) (*node, *Error) {
	name, vpc := p.Get("GroupName"), p.Get("VpcId")
	switch {
	case name == "" || len(name) > 255 || strings.HasPrefix(strings.ToLower(name), "sg-"):
		return nil, errorf("InvalidParameterValue", "Invalid security group name '%s'", name)
	case p.Get("GroupDescription") == "":
		return nil, errorf("MissingParameter", "The request must contain the parameter GroupDescription")
	case vpc != s.vpcID:
		return nil, errorf("InvalidVpcID.NotFound", "The vpc ID '%s' does not exist", vpc)
	}
	for _, g := range s.groups {
		if g.name == name && g.vpc == vpc {
			return nil, errorf("InvalidGroup.Duplicate", "The security group '%s' already exists for VPC '%s'", name, vpc)
		}
	}
	tags := map[string]string{}
	for _, pre := range structs(p, "TagSpecification") {
		if p.Get(pre+"ResourceType") != "security-group" {
			return nil, errorf("InvalidParameterValue", "tags for resource type %q cannot be applied here", p.Get(pre+"ResourceType"))
		}
		t, err := tagsOf(p, pre+"Tag")
		if err != nil {
			return nil, &Error{Code: "InvalidParameterValue", Message: err.Message}
		}
		for k, v := range t {
			tags[k] = v
		}
	}
	if err := checkTags(tags); err != nil {
		return nil, &Error{Code: "TagLimitExceeded", Message: err.Message}
	}
	id := s.newID("sg-")
	s.groups[id] = &securityGroup{id: id, name: name, description: p.Get("GroupDescription"), vpc: vpc, tags: tags}
	return el("", leaf("groupId", id), tagList("tagSet", "item", tags, "key", "value")), nil
}

func (s *Server) deleteSecurityGroup(p url.Values) (*node, *Error) {
	id := p.Get("GroupId")
	if _, ok := s.groups[id]; !ok {
		return nil, errorf("InvalidGroup.NotFound", "The security group '%s' does not exist", id)
	}
	for _, lb := range s.lbs {
		if slices.Contains(lb.groups, id) {
			return nil, errorf("DependencyViolation", "resource %s has a dependent object", id)
		}
	}
	for _, g := range s.groups {
		for _, r := range g.ingress {
			if r.group == id {
				return nil, errorf("DependencyViolation", "resource %s has a dependent object", id)
			}
		}
	}
	delete(s.groups, id)
	return nil, nil
}

// readPermissions parses IpPermissions.N.*; each source becomes one rule.
func (s *Server) readPermissions(p url.Values) ([]permission, *Error) {
	var out []permission
	for _, pre := range structs(p, "IpPermissions") {
		base := permission{protocol: p.Get(pre + "IpProtocol")}
		if !slices.Contains([]string{"tcp", "udp", "icmp", "-1"}, base.protocol) {
			return nil, errorf("InvalidParameterValue", "Invalid IP protocol '%s'", base.protocol)
		}
		base.from, _ = strconv.Atoi(p.Get(pre + "FromPort"))
		base.to, _ = strconv.Atoi(p.Get(pre + "ToPort"))
		for _, r := range structs(p, pre+"IpRanges") {
			out = append(out, withSource(base, "cidr", p.Get(r+"CidrIp"), p.Get(r+"Description")))
		}
		for _, r := range structs(p, pre+"Ipv6Ranges") {
			out = append(out, withSource(base, "cidr6", p.Get(r+"CidrIpv6"), p.Get(r+"Description")))
		}
		for _, r := range structs(p, pre+"Groups") {
			g := p.Get(r + "GroupId")
			if _, ok := s.groups[g]; !ok {
				return nil, errorf("InvalidGroup.NotFound", "The security group '%s' does not exist", g)
			}
			out = append(out, withSource(base, "group", g, p.Get(r+"Description")))
		}
	}
	if len(out) == 0 {
		return nil, errorf("MissingParameter", "No permissions given")
	}
	return out, nil
}

func withSource(p permission, kind, value, description string) permission {
	switch kind {
	case "cidr":
		p.cidr = value
	case "cidr6":
		p.cidr6 = value
	default:
		p.group = value
	}
	p.description = description
	return p
}

// ruleChange reads the group and permissions of an authorize or revoke.
func (s *Server) ruleChange(p url.Values) (*securityGroup, []permission, *Error) {
	g, ok := s.groups[p.Get("GroupId")]
	if !ok {
		return nil, nil, errorf("InvalidGroup.NotFound", "The security group '%s' does not exist", p.Get("GroupId"))
	}
	perms, err := s.readPermissions(p)
	return g, perms, err
}

func (s *Server) authorizeIngress(p url.Values) (*node, *Error) {
	g, perms, err := s.ruleChange(p)
	if err != nil {
		return nil, err
	}
	for _, r := range perms {
		for _, have := range g.ingress {
			if have.same(r) {
				return nil, errorf("InvalidPermission.Duplicate", "the specified rule %q already exists", r.String())
			}
		}
	}
	if len(g.ingress)+len(perms) > 60 {
		return nil, errorf("RulesPerSecurityGroupLimitExceeded", "The maximum number of rules per security group has been reached.")
	}
	g.ingress = append(g.ingress, perms...)
	return el("", leaf("return", "true")), nil
}

func (s *Server) revokeIngress(p url.Values) (*node, *Error) {
	g, perms, err := s.ruleChange(p)
	if err != nil {
		return nil, err
	}
	for _, r := range perms {
		i := slices.IndexFunc(g.ingress, r.same)
		if i < 0 {
			return nil, errorf("InvalidPermission.NotFound", "The specified rule does not exist in this security group.")
		}
		g.ingress = slices.Delete(g.ingress, i, i+1)
	}
	return el("", leaf("return", "true")), nil
}

// taggedGroups resolves the ResourceId.N of a CreateTags or DeleteTags:
// herald tags security groups alone, so the fake knows no other kind.
func (s *Server) taggedGroups(p url.Values) ([]*securityGroup, *Error) {
	ids := members(p, "ResourceId", true)
	if len(ids) == 0 {
		return nil, errorf("MissingParameter", "The request must contain the parameter resourceIdSet")
	}
	var out []*securityGroup
	for _, id := range ids {
		g, ok := s.groups[id]
		if !ok {
			return nil, errorf("InvalidGroup.NotFound", "The security group '%s' does not exist", id)
		}
		out = append(out, g)
	}
	return out, nil
}

func (s *Server) createTags(p url.Values) (*node, *Error) {
	groups, err := s.taggedGroups(p)
	if err != nil {
		return nil, err
	}
	tags, err := tagsOf(p, "Tag")
	if err != nil {
		return nil, &Error{Code: "InvalidParameterValue", Message: err.Message}
	}
	merged := make([]map[string]string, len(groups))
	for i, g := range groups { // all or nothing, as EC2
		merged[i] = map[string]string{}
		maps.Copy(merged[i], g.tags) // g.tags may be nil
		maps.Copy(merged[i], tags)
		if err := checkTags(merged[i]); err != nil {
			return nil, &Error{Code: "TagLimitExceeded", Message: err.Message}
		}
	}
	for i, g := range groups {
		g.tags = merged[i]
	}
	return el("", leaf("return", "true")), nil
}

// deleteTags removes each Tag.N.Key; with a Value, only if the tag has it.
func (s *Server) deleteTags(p url.Values) (*node, *Error) {
	groups, err := s.taggedGroups(p)
	if err != nil {
		return nil, err
	}
	for _, pre := range structs(p, "Tag") {
		k := p.Get(pre + "Key")
		_, valued := p[pre+"Value"]
		for _, g := range groups {
			if !valued || g.tags[k] == p.Get(pre+"Value") {
				delete(g.tags, k)
			}
		}
	}
	return el("", leaf("return", "true")), nil
}

var instanceStateCodes = map[string]string{"pending": "0", "running": "16", "shutting-down": "32",
	"terminated": "48", "stopping": "64", "stopped": "80"}

func (s *Server) describeInstances(p url.Values) (*node, *Error) {
	ids, f := members(p, "InstanceId", true), filters(p)
	var items []*node
	for _, id := range sortedKeys(s.instances) {
		in := s.instances[id]
		if len(ids) > 0 && !slices.Contains(ids, id) ||
			!matchFilters(f, nil, map[string]string{"instance-id": id, "availability-zone": in.Zone}) {
			continue
		}
		var groups []*node
		for _, g := range in.Groups {
			groups = append(groups, el("", leaf("groupId", g)))
		}
		items = append(items, el("", leaf("instanceId", id), leaf("instanceType", in.Type),
			el("placement", leaf("availabilityZone", in.Zone)), leaf("privateIpAddress", in.PrivateIP),
			leaf("privateDnsName", in.PrivateDNS), leaf("ipAddress", in.PublicIP), leaf("vpcId", s.vpcID),
			el("instanceState", leaf("code", instanceStateCodes[in.State]), leaf("name", in.State)),
			list("groupSet", "item", groups)))
	}
	if len(items) < len(ids) {
		return nil, errorf("InvalidInstanceID.NotFound", "The instance ID does not exist")
	}
	var reservations []*node
	if len(items) > 0 {
		reservations = append(reservations, el("", leaf("reservationId", "r-0fake"), list("instancesSet", "item", items)))
	}
	return el("", list("reservationSet", "item", reservations)), nil
}
