package api

import (
	"context"
	"maps"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Filter is an EC2 describe filter, e.g. {"tag:kubernetes.io/role/elb", ["1"]}.
type Filter struct {
	Name   string
	Values []string
}

// EC2 is the part of EC2 herald uses.
type EC2 interface {
	// Subnets returns the subnets with the given IDs, or matching filters.
	Subnets(ctx context.Context, ids []string, filters ...Filter) ([]Subnet, error)
	// SecurityGroups returns the groups with the given IDs, or matching filters.
	SecurityGroups(ctx context.Context, ids []string, filters ...Filter) ([]SecurityGroup, error)
	CreateSecurityGroup(ctx context.Context, name, description, vpcID string, tags map[string]string) (string, error)
	DeleteSecurityGroup(ctx context.Context, id string) error
	AuthorizeIngress(ctx context.Context, groupID string, rules []Permission) error
	RevokeIngress(ctx context.Context, groupID string, rules []Permission) error
	// TagSecurityGroup adds or overwrites a group's tags; UntagSecurityGroup
	// removes them by key.
	TagSecurityGroup(ctx context.Context, groupID string, tags map[string]string) error
	UntagSecurityGroup(ctx context.Context, groupID string, keys []string) error
	// Instances returns the instances with the given IDs; missing ones
	// (terminated long ago) are left out rather than failing the call.
	Instances(ctx context.Context, ids []string) ([]Instance, error)
}

type ec2API struct{ c *ec2.Client }

func toFilters(filters []Filter) []types.Filter {
	out := make([]types.Filter, 0, len(filters))
	for _, f := range filters {
		out = append(out, types.Filter{Name: aws.String(f.Name), Values: f.Values})
	}
	return out
}

func fromTags(tags []types.Tag) map[string]string {
	out := make(map[string]string, len(tags))
	for _, t := range tags {
		out[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return out
}

// toEC2Tags lists tags in key order, so that a request's bytes do not
// depend on map order.
func toEC2Tags(tags map[string]string) []types.Tag {
	out := make([]types.Tag, 0, len(tags))
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		out = append(out, types.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
	}
	return out
}

func (e *ec2API) Subnets(ctx context.Context, ids []string, filters ...Filter) ([]Subnet, error) {
	var out []Subnet
	pages := ec2.NewDescribeSubnetsPaginator(e.c, &ec2.DescribeSubnetsInput{SubnetIds: ids, Filters: toFilters(filters)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, s := range page.Subnets {
			out = append(out, Subnet{ID: aws.ToString(s.SubnetId), VPCID: aws.ToString(s.VpcId),
				Zone: aws.ToString(s.AvailabilityZone), Tags: fromTags(s.Tags)})
		}
	}
	return out, nil
}

func (e *ec2API) SecurityGroups(ctx context.Context, ids []string, filters ...Filter) ([]SecurityGroup, error) {
	var out []SecurityGroup
	pages := ec2.NewDescribeSecurityGroupsPaginator(e.c, &ec2.DescribeSecurityGroupsInput{GroupIds: ids, Filters: toFilters(filters)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, g := range page.SecurityGroups {
			out = append(out, SecurityGroup{ID: aws.ToString(g.GroupId), Name: aws.ToString(g.GroupName),
				VPCID: aws.ToString(g.VpcId), Ingress: fromPermissions(g.IpPermissions), Tags: fromTags(g.Tags)})
		}
	}
	return out, nil
}

// fromPermissions flattens EC2's permissions (one port range, many
// sources) into one Permission per source.
func fromPermissions(perms []types.IpPermission) []Permission {
	var out []Permission
	for _, p := range perms {
		base := Permission{Protocol: aws.ToString(p.IpProtocol), FromPort: aws.ToInt32(p.FromPort), ToPort: aws.ToInt32(p.ToPort)}
		for _, r := range p.IpRanges {
			r4 := base
			r4.CIDR, r4.Description = aws.ToString(r.CidrIp), aws.ToString(r.Description)
			out = append(out, r4)
		}
		for _, r := range p.Ipv6Ranges {
			r6 := base
			r6.CIDR, r6.Description = aws.ToString(r.CidrIpv6), aws.ToString(r.Description)
			out = append(out, r6)
		}
		for _, g := range p.UserIdGroupPairs {
			rg := base
			rg.SourceGroup, rg.Description = aws.ToString(g.GroupId), aws.ToString(g.Description)
			out = append(out, rg)
		}
	}
	return out
}

func toPermissions(rules []Permission) []types.IpPermission {
	out := make([]types.IpPermission, 0, len(rules))
	for _, r := range rules {
		p := types.IpPermission{IpProtocol: aws.String(r.Protocol), FromPort: aws.Int32(r.FromPort), ToPort: aws.Int32(r.ToPort)}
		description := optional(r.Description)
		switch {
		case r.SourceGroup != "":
			p.UserIdGroupPairs = []types.UserIdGroupPair{{GroupId: aws.String(r.SourceGroup), Description: description}}
		case strings.Contains(r.CIDR, ":"):
			p.Ipv6Ranges = []types.Ipv6Range{{CidrIpv6: aws.String(r.CIDR), Description: description}}
		default:
			p.IpRanges = []types.IpRange{{CidrIp: aws.String(r.CIDR), Description: description}}
		}
		out = append(out, p)
	}
	return out
}

func (e *ec2API) CreateSecurityGroup(ctx context.Context, name, description, vpcID string, tags map[string]string) (string, error) {
	spec := types.TagSpecification{ResourceType: types.ResourceTypeSecurityGroup, Tags: toEC2Tags(tags)}
	resp, err := e.c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(name),
		Description: aws.String(description), VpcId: aws.String(vpcID), TagSpecifications: []types.TagSpecification{spec}})
	if err != nil {
		return "", err
	}
	return aws.ToString(resp.GroupId), nil
}

func (e *ec2API) DeleteSecurityGroup(ctx context.Context, id string) error {
	_, err := e.c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(id)})
	return err
}

func (e *ec2API) AuthorizeIngress(ctx context.Context, groupID string, rules []Permission) error {
	_, err := e.c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(groupID),
		IpPermissions: toPermissions(rules)})
	return err
}

func (e *ec2API) RevokeIngress(ctx context.Context, groupID string, rules []Permission) error {
	_, err := e.c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(groupID),
		IpPermissions: toPermissions(rules)})
	return err
}

func (e *ec2API) TagSecurityGroup(ctx context.Context, groupID string, tags map[string]string) error {
	_, err := e.c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{groupID}, Tags: toEC2Tags(tags)})
	return err
}

func (e *ec2API) UntagSecurityGroup(ctx context.Context, groupID string, keys []string) error {
	tags := make([]types.Tag, 0, len(keys))
	for _, k := range keys {
		tags = append(tags, types.Tag{Key: aws.String(k)}) // no value: whatever it is
	}
	_, err := e.c.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{groupID}, Tags: tags})
	return err
}

func (e *ec2API) Instances(ctx context.Context, ids []string) ([]Instance, error) {
	var out []Instance
	// Filtering by instance-id instead of naming them keeps one
	// terminated-and-forgotten instance from failing the whole call.
	pages := ec2.NewDescribeInstancesPaginator(e.c, &ec2.DescribeInstancesInput{
		Filters: []types.Filter{{Name: aws.String("instance-id"), Values: ids}}})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, r := range page.Reservations {
			for _, in := range r.Instances {
				i := Instance{ID: aws.ToString(in.InstanceId), Type: string(in.InstanceType),
					PrivateIP: aws.ToString(in.PrivateIpAddress), PrivateDNS: aws.ToString(in.PrivateDnsName),
					PublicIP: aws.ToString(in.PublicIpAddress), PublicDNS: aws.ToString(in.PublicDnsName)}
				if in.Placement != nil {
					i.Zone = aws.ToString(in.Placement.AvailabilityZone)
				}
				if in.State != nil {
					i.State = string(in.State.Name)
				}
				out = append(out, i)
			}
		}
	}
	return out, nil
}
