package api

import (
	"context"
	"maps"
	"slices"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
)

// ELB is the part of Elastic Load Balancing v2 herald uses. List methods
// return everything, paging and batching inside.
type ELB interface {
	LoadBalancers(ctx context.Context) ([]LoadBalancer, error)
	// Tags returns the tags of up to any number of ARNs (20 per call).
	Tags(ctx context.Context, arns []string) (map[string]map[string]string, error)
	CreateLoadBalancer(ctx context.Context, in CreateLoadBalancerInput) (LoadBalancer, error)
	DeleteLoadBalancer(ctx context.Context, arn string) error
	LoadBalancerAttributes(ctx context.Context, arn string) (map[string]string, error)
	ModifyLoadBalancerAttributes(ctx context.Context, arn string, attrs map[string]string) error
	SetSecurityGroups(ctx context.Context, arn string, groups []string) error
	AddTags(ctx context.Context, arn string, tags map[string]string) error
	RemoveTags(ctx context.Context, arn string, keys []string) error

	Listeners(ctx context.Context, lbARN string) ([]Listener, error)
	CreateListener(ctx context.Context, l Listener) (Listener, error)
	ModifyListener(ctx context.Context, l Listener) error
	DeleteListener(ctx context.Context, arn string) error

	TargetGroups(ctx context.Context) ([]TargetGroup, error)
	CreateTargetGroup(ctx context.Context, tg TargetGroup) (TargetGroup, error)
	ModifyTargetGroup(ctx context.Context, arn string, hc HealthCheck) error
	DeleteTargetGroup(ctx context.Context, arn string) error
	TargetGroupAttributes(ctx context.Context, arn string) (map[string]string, error)
	ModifyTargetGroupAttributes(ctx context.Context, arn string, attrs map[string]string) error
	TargetHealth(ctx context.Context, tgARN string) ([]TargetHealth, error)
	RegisterTargets(ctx context.Context, tgARN string, targets []Target) error
	DeregisterTargets(ctx context.Context, tgARN string, targets []Target) error
}

// maxTagARNs is DescribeTags' limit of resources per call.
const maxTagARNs = 20

type elbAPI struct{ c *elbv2.Client }

func (e *elbAPI) LoadBalancers(ctx context.Context) ([]LoadBalancer, error) {
	var out []LoadBalancer
	pages := elbv2.NewDescribeLoadBalancersPaginator(e.c, &elbv2.DescribeLoadBalancersInput{PageSize: aws.Int32(400)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, lb := range page.LoadBalancers {
			if lb.Type != types.LoadBalancerTypeEnumNetwork {
				continue
			}
			out = append(out, fromLoadBalancer(lb))
		}
	}
	return out, nil
}

func fromLoadBalancer(lb types.LoadBalancer) LoadBalancer {
	out := LoadBalancer{ARN: aws.ToString(lb.LoadBalancerArn), Name: aws.ToString(lb.LoadBalancerName),
		DNSName: aws.ToString(lb.DNSName), Scheme: string(lb.Scheme), IPAddressType: string(lb.IpAddressType),
		VPCID: aws.ToString(lb.VpcId), SecurityGroups: lb.SecurityGroups}
	if lb.State != nil {
		out.State = string(lb.State.Code)
	}
	for _, z := range lb.AvailabilityZones {
		out.Subnets = append(out.Subnets, aws.ToString(z.SubnetId))
	}
	return out
}

func (e *elbAPI) Tags(ctx context.Context, arns []string) (map[string]map[string]string, error) {
	out := make(map[string]map[string]string, len(arns))
	for batch := range slices.Chunk(arns, maxTagARNs) {
		resp, err := e.c.DescribeTags(ctx, &elbv2.DescribeTagsInput{ResourceArns: batch})
		if err != nil {
			return nil, err
		}
		for _, d := range resp.TagDescriptions {
			tags := make(map[string]string, len(d.Tags))
			for _, t := range d.Tags {
				tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
			}
			out[aws.ToString(d.ResourceArn)] = tags
		}
	}
	return out, nil
}

func toTags(tags map[string]string) []types.Tag {
	out := make([]types.Tag, 0, len(tags))
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		out = append(out, types.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
	}
	return out
}

func (e *elbAPI) CreateLoadBalancer(ctx context.Context, in CreateLoadBalancerInput) (LoadBalancer, error) {
	req := &elbv2.CreateLoadBalancerInput{Name: aws.String(in.Name), Type: types.LoadBalancerTypeEnumNetwork,
		Scheme: types.LoadBalancerSchemeEnum(in.Scheme), IpAddressType: types.IpAddressType(in.IPAddressType),
		SecurityGroups: in.SecurityGroups, Tags: toTags(in.Tags)}
	for _, m := range in.Subnets {
		req.SubnetMappings = append(req.SubnetMappings, types.SubnetMapping{SubnetId: aws.String(m.SubnetID),
			AllocationId: optional(m.AllocationID), PrivateIPv4Address: optional(m.PrivateIPv4Address)})
	}
	resp, err := e.c.CreateLoadBalancer(ctx, req)
	if err != nil {
		return LoadBalancer{}, err
	}
	lb := fromLoadBalancer(resp.LoadBalancers[0])
	lb.Tags = maps.Clone(in.Tags)
	return lb, nil
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}

func (e *elbAPI) DeleteLoadBalancer(ctx context.Context, arn string) error {
	_, err := e.c.DeleteLoadBalancer(ctx, &elbv2.DeleteLoadBalancerInput{LoadBalancerArn: aws.String(arn)})
	return err
}

func (e *elbAPI) LoadBalancerAttributes(ctx context.Context, arn string) (map[string]string, error) {
	resp, err := e.c.DescribeLoadBalancerAttributes(ctx, &elbv2.DescribeLoadBalancerAttributesInput{LoadBalancerArn: aws.String(arn)})
	if err != nil {
		return nil, err
	}
	return fromLBAttributes(resp.Attributes), nil
}

func fromLBAttributes(attrs []types.LoadBalancerAttribute) map[string]string {
	out := make(map[string]string, len(attrs))
	for _, a := range attrs {
		out[aws.ToString(a.Key)] = aws.ToString(a.Value)
	}
	return out
}

func (e *elbAPI) ModifyLoadBalancerAttributes(ctx context.Context, arn string, attrs map[string]string) error {
	req := &elbv2.ModifyLoadBalancerAttributesInput{LoadBalancerArn: aws.String(arn)}
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		req.Attributes = append(req.Attributes, types.LoadBalancerAttribute{Key: aws.String(k), Value: aws.String(attrs[k])})
	}
	_, err := e.c.ModifyLoadBalancerAttributes(ctx, req)
	return err
}

func (e *elbAPI) SetSecurityGroups(ctx context.Context, arn string, groups []string) error {
	_, err := e.c.SetSecurityGroups(ctx, &elbv2.SetSecurityGroupsInput{LoadBalancerArn: aws.String(arn), SecurityGroups: groups})
	return err
}

func (e *elbAPI) AddTags(ctx context.Context, arn string, tags map[string]string) error {
	_, err := e.c.AddTags(ctx, &elbv2.AddTagsInput{ResourceArns: []string{arn}, Tags: toTags(tags)})
	return err
}

func (e *elbAPI) RemoveTags(ctx context.Context, arn string, keys []string) error {
	_, err := e.c.RemoveTags(ctx, &elbv2.RemoveTagsInput{ResourceArns: []string{arn}, TagKeys: keys})
	return err
}

func (e *elbAPI) Listeners(ctx context.Context, lbARN string) ([]Listener, error) {
	var out []Listener
	pages := elbv2.NewDescribeListenersPaginator(e.c, &elbv2.DescribeListenersInput{LoadBalancerArn: aws.String(lbARN)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, l := range page.Listeners {
			out = append(out, fromListener(l))
		}
	}
	return out, nil
}

func fromListener(l types.Listener) Listener {
	out := Listener{ARN: aws.ToString(l.ListenerArn), LoadBalancerARN: aws.ToString(l.LoadBalancerArn),
		Protocol: string(l.Protocol), Port: aws.ToInt32(l.Port), SSLPolicy: aws.ToString(l.SslPolicy)}
	for _, a := range l.DefaultActions {
		if a.Type == types.ActionTypeEnumForward && a.TargetGroupArn != nil {
			out.TargetGroupARN = aws.ToString(a.TargetGroupArn)
		}
	}
	for _, c := range l.Certificates {
		out.Certificates = append(out.Certificates, aws.ToString(c.CertificateArn))
	}
	return out
}

func listenerActions(l Listener) ([]types.Action, []types.Certificate) {
	actions := []types.Action{{Type: types.ActionTypeEnumForward, TargetGroupArn: aws.String(l.TargetGroupARN)}}
	var certs []types.Certificate
	for _, c := range l.Certificates {
		certs = append(certs, types.Certificate{CertificateArn: aws.String(c)})
	}
	return actions, certs
}

func (e *elbAPI) CreateListener(ctx context.Context, l Listener) (Listener, error) {
	actions, certs := listenerActions(l)
	resp, err := e.c.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: aws.String(l.LoadBalancerARN),
		Port: aws.Int32(l.Port), Protocol: types.ProtocolEnum(l.Protocol), DefaultActions: actions,
		Certificates: certs, SslPolicy: optional(l.SSLPolicy), Tags: toTags(l.Tags)})
	if err != nil {
		return Listener{}, err
	}
	return fromListener(resp.Listeners[0]), nil
}

func (e *elbAPI) ModifyListener(ctx context.Context, l Listener) error {
	actions, certs := listenerActions(l)
	_, err := e.c.ModifyListener(ctx, &elbv2.ModifyListenerInput{ListenerArn: aws.String(l.ARN),
		Port: aws.Int32(l.Port), Protocol: types.ProtocolEnum(l.Protocol), DefaultActions: actions,
		Certificates: certs, SslPolicy: optional(l.SSLPolicy)})
	return err
}

func (e *elbAPI) DeleteListener(ctx context.Context, arn string) error {
	_, err := e.c.DeleteListener(ctx, &elbv2.DeleteListenerInput{ListenerArn: aws.String(arn)})
	return err
}

func (e *elbAPI) TargetGroups(ctx context.Context) ([]TargetGroup, error) {
	var out []TargetGroup
	pages := elbv2.NewDescribeTargetGroupsPaginator(e.c, &elbv2.DescribeTargetGroupsInput{PageSize: aws.Int32(400)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, tg := range page.TargetGroups {
			out = append(out, fromTargetGroup(tg))
		}
	}
	return out, nil
}

func fromTargetGroup(tg types.TargetGroup) TargetGroup {
	return TargetGroup{ARN: aws.ToString(tg.TargetGroupArn), Name: aws.ToString(tg.TargetGroupName),
		Protocol: string(tg.Protocol), Port: aws.ToInt32(tg.Port), TargetType: string(tg.TargetType),
		IPAddressType: string(tg.IpAddressType), VPCID: aws.ToString(tg.VpcId), LoadBalancerARNs: tg.LoadBalancerArns,
		HealthCheck: HealthCheck{Protocol: string(tg.HealthCheckProtocol), Port: aws.ToString(tg.HealthCheckPort),
			Path: aws.ToString(tg.HealthCheckPath), IntervalSeconds: aws.ToInt32(tg.HealthCheckIntervalSeconds),
			TimeoutSeconds: aws.ToInt32(tg.HealthCheckTimeoutSeconds), HealthyThreshold: aws.ToInt32(tg.HealthyThresholdCount),
			UnhealthyThreshold: aws.ToInt32(tg.UnhealthyThresholdCount)}}
}

func (e *elbAPI) CreateTargetGroup(ctx context.Context, tg TargetGroup) (TargetGroup, error) {
	hc := tg.HealthCheck
	resp, err := e.c.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String(tg.Name),
		Protocol: types.ProtocolEnum(tg.Protocol), Port: aws.Int32(tg.Port), VpcId: aws.String(tg.VPCID),
		TargetType: types.TargetTypeEnum(tg.TargetType), IpAddressType: types.TargetGroupIpAddressTypeEnum(tg.IPAddressType),
		HealthCheckProtocol: types.ProtocolEnum(hc.Protocol), HealthCheckPort: aws.String(hc.Port),
		HealthCheckPath: optional(hc.Path), HealthCheckIntervalSeconds: aws.Int32(hc.IntervalSeconds),
		HealthCheckTimeoutSeconds: aws.Int32(hc.TimeoutSeconds), HealthyThresholdCount: aws.Int32(hc.HealthyThreshold),
		UnhealthyThresholdCount: aws.Int32(hc.UnhealthyThreshold), Tags: toTags(tg.Tags)})
	if err != nil {
		return TargetGroup{}, err
	}
	out := fromTargetGroup(resp.TargetGroups[0])
	out.Tags = maps.Clone(tg.Tags)
	return out, nil
}

func (e *elbAPI) ModifyTargetGroup(ctx context.Context, arn string, hc HealthCheck) error {
	_, err := e.c.ModifyTargetGroup(ctx, &elbv2.ModifyTargetGroupInput{TargetGroupArn: aws.String(arn),
		HealthCheckProtocol: types.ProtocolEnum(hc.Protocol), HealthCheckPort: aws.String(hc.Port),
		HealthCheckPath: optional(hc.Path), HealthCheckIntervalSeconds: aws.Int32(hc.IntervalSeconds),
		HealthCheckTimeoutSeconds: aws.Int32(hc.TimeoutSeconds), HealthyThresholdCount: aws.Int32(hc.HealthyThreshold),
		UnhealthyThresholdCount: aws.Int32(hc.UnhealthyThreshold)})
	return err
}

func (e *elbAPI) DeleteTargetGroup(ctx context.Context, arn string) error {
	_, err := e.c.DeleteTargetGroup(ctx, &elbv2.DeleteTargetGroupInput{TargetGroupArn: aws.String(arn)})
	return err
}

func (e *elbAPI) TargetGroupAttributes(ctx context.Context, arn string) (map[string]string, error) {
	resp, err := e.c.DescribeTargetGroupAttributes(ctx, &elbv2.DescribeTargetGroupAttributesInput{TargetGroupArn: aws.String(arn)})
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(resp.Attributes))
	for _, a := range resp.Attributes {
		out[aws.ToString(a.Key)] = aws.ToString(a.Value)
	}
	return out, nil
}

func (e *elbAPI) ModifyTargetGroupAttributes(ctx context.Context, arn string, attrs map[string]string) error {
	req := &elbv2.ModifyTargetGroupAttributesInput{TargetGroupArn: aws.String(arn)}
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		req.Attributes = append(req.Attributes, types.TargetGroupAttribute{Key: aws.String(k), Value: aws.String(attrs[k])})
	}
	_, err := e.c.ModifyTargetGroupAttributes(ctx, req)
	return err
}

func (e *elbAPI) TargetHealth(ctx context.Context, tgARN string) ([]TargetHealth, error) {
	resp, err := e.c.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(tgARN)})
	if err != nil {
		return nil, err
	}
	out := make([]TargetHealth, 0, len(resp.TargetHealthDescriptions))
	for _, d := range resp.TargetHealthDescriptions {
		th := TargetHealth{}
		if d.Target != nil {
			th.ID, th.Port = aws.ToString(d.Target.Id), aws.ToInt32(d.Target.Port)
		}
		if d.TargetHealth != nil {
			th.State = string(d.TargetHealth.State)
		}
		out = append(out, th)
	}
	return out, nil
}

func toTargets(targets []Target) []types.TargetDescription {
	out := make([]types.TargetDescription, 0, len(targets))
	for _, t := range targets {
		out = append(out, types.TargetDescription{Id: aws.String(t.ID), Port: aws.Int32(t.Port)})
	}
	return out
}

func (e *elbAPI) RegisterTargets(ctx context.Context, tgARN string, targets []Target) error {
	_, err := e.c.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: aws.String(tgARN), Targets: toTargets(targets)})
	return err
}

func (e *elbAPI) DeregisterTargets(ctx context.Context, tgARN string, targets []Target) error {
	_, err := e.c.DeregisterTargets(ctx, &elbv2.DeregisterTargetsInput{TargetGroupArn: aws.String(tgARN), Targets: toTargets(targets)})
	return err
}

// PortString formats a port for fields AWS types as strings.
func PortString(p int32) string { return strconv.Itoa(int(p)) }
