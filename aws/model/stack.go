// Package model is the desired state of one Service's AWS load balancer: a
// Network Load Balancer with its listeners, target groups, targets,
// attributes, tags and security-group rules. It is pure data: aws/build
// computes it from a Service, aws/deploy makes AWS match it.
//
// Everything is ordered (slices sorted by key, tags and attributes as maps
// that encoding/json writes sorted), so two builds of the same input are
// byte-identical and golden files stay stable.
package model

// Scheme values of an NLB.
const (
	SchemeInternetFacing = "internet-facing"
	SchemeInternal       = "internal"
)

// IP address types of an NLB.
const (
	IPAddressTypeIPv4      = "ipv4"
	IPAddressTypeDualStack = "dualstack"
)

// Target types of a target group.
const (
	TargetTypeInstance = "instance"
	TargetTypeIP       = "ip"
)

// Stack is everything one Service needs in AWS.
type Stack struct {
	// ServiceKey is namespace/name; ServiceUID tells a recreated Service
	// from its predecessor.
	ServiceKey   string         `json:"serviceKey"`
	ServiceUID   string         `json:"serviceUID"`
	LoadBalancer LoadBalancer   `json:"loadBalancer"`
	Listeners    []Listener     `json:"listeners"`
	TargetGroups []TargetGroup  `json:"targetGroups"`
	Frontend     *SecurityGroup `json:"frontendSecurityGroup,omitempty"`
	// NodeRules open the NodePorts (traffic and health check) on the
	// nodes' security groups to the cluster's shared backend security
	// group, which every herald NLB carries besides its frontend group.
	// They are ranges, not one rule per port: EC2 allows 60 rules per
	// group, and a rule per Service would run out near 60 Services.
	NodeRules []NodeRule `json:"nodeRules,omitempty"`
}

// LoadBalancer is the NLB itself.
type LoadBalancer struct {
	// Name is unique per account and region and at most 32 characters.
	Name          string          `json:"name"`
	Scheme        string          `json:"scheme"`
	IPAddressType string          `json:"ipAddressType"`
	Subnets       SubnetSelection `json:"subnets"`
	// SecurityGroups are the user's own groups; empty means the managed
	// frontend group (Stack.Frontend).
	SecurityGroups []string          `json:"securityGroups,omitempty"`
	Attributes     map[string]string `json:"attributes,omitempty"`
	Tags           map[string]string `json:"tags"`
}

// SubnetSelection says where the NLB lives: named subnets, or discovery by
// the kubernetes.io/role/elb (internal-elb) tag, one subnet per zone.
type SubnetSelection struct {
	// IDsOrNames come from the subnets annotation (subnet-… IDs or Name tags).
	IDsOrNames []string `json:"idsOrNames,omitempty"`
	// DiscoverRoleTag is the tag key discovery looks for when IDsOrNames is empty.
	DiscoverRoleTag string `json:"discoverRoleTag,omitempty"`
	// EIPAllocations and PrivateIPv4Addresses pin one address per subnet, in order.
	EIPAllocations       []string `json:"eipAllocations,omitempty"`
	PrivateIPv4Addresses []string `json:"privateIPv4Addresses,omitempty"`
}

// Listener is one port of the NLB.
type Listener struct {
	Port     int32  `json:"port"`
	Protocol string `json:"protocol"`
	// TargetGroup is the Key of the target group it forwards to.
	TargetGroup  string   `json:"targetGroup"`
	Certificates []string `json:"certificates,omitempty"`
	SSLPolicy    string   `json:"sslPolicy,omitempty"`
}

// TargetGroup receives one listener's traffic on the nodes' NodePort.
type TargetGroup struct {
	// Key is stable within the stack for one Service port (protocol and
	// port), so a renamed target group is still recognised as that port's.
	Key string `json:"key"`
	// Name changes whenever a field AWS cannot modify in place changes.
	Name          string            `json:"name"`
	Protocol      string            `json:"protocol"`
	Port          int32             `json:"port"`
	TargetType    string            `json:"targetType"`
	IPAddressType string            `json:"ipAddressType"`
	HealthCheck   HealthCheck       `json:"healthCheck"`
	Attributes    map[string]string `json:"attributes,omitempty"`
	Tags          map[string]string `json:"tags"`
	Targets       []Target          `json:"targets"`
}

// HealthCheck is a target group's health check.
type HealthCheck struct {
	Protocol string `json:"protocol"`
	// Port is "traffic-port" or a port number.
	Port               string `json:"port"`
	Path               string `json:"path,omitempty"`
	IntervalSeconds    int32  `json:"intervalSeconds"`
	TimeoutSeconds     int32  `json:"timeoutSeconds"`
	HealthyThreshold   int32  `json:"healthyThreshold"`
	UnhealthyThreshold int32  `json:"unhealthyThreshold"`
}

// Target is an instance (or IP) and the port traffic goes to.
type Target struct {
	ID   string `json:"id"`
	Port int32  `json:"port"`
}

// SecurityGroup is the managed frontend group of the NLB.
type SecurityGroup struct {
	// Name is unique per VPC; Description is fixed at creation.
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Ingress     []Rule            `json:"ingress"`
	Tags        map[string]string `json:"tags"`
}

// Rule is one ingress permission from a CIDR.
type Rule struct {
	Protocol string `json:"protocol"`
	FromPort int32  `json:"fromPort"`
	ToPort   int32  `json:"toPort"`
	CIDR     string `json:"cidr"`
}

// NodeRule opens a port range on the nodes' security groups to the shared
// backend group. Rules are shared by all Services; one is removed when no
// target group needs it any more.
type NodeRule struct {
	Protocol string `json:"protocol"`
	FromPort int32  `json:"fromPort"`
	ToPort   int32  `json:"toPort"`
}
