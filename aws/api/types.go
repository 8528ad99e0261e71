// Package api is herald's only door to AWS: the sole importer of the
// aws-sdk-go-v2 service packages. It offers narrow interfaces in herald's
// own types (ELB, EC2) that hide paging and batching, a shared token-bucket
// budget per API family that slows down when AWS throttles, metrics of
// calls by operation and outcome, and a cache of the shared reads.
package api

import (
	"errors"

	"github.com/aws/smithy-go"
)

// LoadBalancer is an ELBv2 load balancer.
type LoadBalancer struct {
	ARN, Name, DNSName, Scheme, IPAddressType, State, VPCID string
	SecurityGroups                                          []string
	Subnets                                                 []string
	// Tags are filled in by Inventory, not by the ELB describe call.
	Tags map[string]string
}

// SubnetMapping places a load balancer in a subnet, optionally with a
// fixed Elastic IP or private address.
type SubnetMapping struct {
	SubnetID, AllocationID, PrivateIPv4Address string
}

// CreateLoadBalancerInput is a new network load balancer.
type CreateLoadBalancerInput struct {
	Name, Scheme, IPAddressType string
	Subnets                     []SubnetMapping
	SecurityGroups              []string
	Tags                        map[string]string
}

// Listener forwards a port to one target group.
type Listener struct {
	ARN, LoadBalancerARN, Protocol, TargetGroupARN, SSLPolicy string
	Port                                                      int32
	Certificates                                              []string
	// Tags are set at creation only, so IAM can scope listener changes
	// by tag; they are not read back.
	Tags map[string]string
}

// HealthCheck is a target group's health check.
type HealthCheck struct {
	Protocol, Port, Path                                                  string
	IntervalSeconds, TimeoutSeconds, HealthyThreshold, UnhealthyThreshold int32
}

// TargetGroup is an ELBv2 target group.
type TargetGroup struct {
	ARN, Name, Protocol, TargetType, IPAddressType, VPCID string
	Port                                                  int32
	HealthCheck                                           HealthCheck
	LoadBalancerARNs                                      []string
	Tags                                                  map[string]string
}

// Target is a registered instance and port.
type Target struct {
	ID   string
	Port int32
}

// TargetHealth is a target and its state (initial, healthy, unhealthy, ...).
type TargetHealth struct {
	Target
	State string
}

// Subnet is an EC2 subnet.
type Subnet struct {
	ID, VPCID, Zone string
	Tags            map[string]string
}

// SecurityGroup is an EC2 security group with its ingress rules.
type SecurityGroup struct {
	ID, Name, VPCID string
	Ingress         []Permission
	Tags            map[string]string
}

// Permission is one ingress rule from one source: a CIDR, an IPv6 CIDR
// or another group.
type Permission struct {
	Protocol          string
	FromPort, ToPort  int32
	CIDR, SourceGroup string
	Description       string
}

// Key identifies a rule as EC2 does: everything but the description.
func (p Permission) Key() Permission { p.Description = ""; return p }

// Instance is an EC2 instance.
type Instance struct {
	ID, Zone, Type, State, PrivateIP, PrivateDNS, PublicIP, PublicDNS string
}

// Error codes herald acts on.
const (
	CodeDuplicateLoadBalancerName = "DuplicateLoadBalancerName"
	CodeLoadBalancerNotFound      = "LoadBalancerNotFound"
	CodeTargetGroupNotFound       = "TargetGroupNotFound"
	CodeListenerNotFound          = "ListenerNotFound"
	CodeResourceInUse             = "ResourceInUse"
	CodeInvalidTarget             = "InvalidTarget"
	CodeGroupDuplicate            = "InvalidGroup.Duplicate"
	CodeGroupNotFound             = "InvalidGroup.NotFound"
	CodePermissionDuplicate       = "InvalidPermission.Duplicate"
	CodePermissionNotFound        = "InvalidPermission.NotFound"
	CodeDependencyViolation       = "DependencyViolation"
	CodeInstanceNotFound          = "InvalidInstanceID.NotFound"
)

// IsCode reports whether err is an AWS API error with code.
func IsCode(err error, code string) bool {
	var apiErr smithy.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode() == code
}

// ErrorCode returns the AWS error code of err, or "".
func ErrorCode(err error) string {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode()
	}
	return ""
}
