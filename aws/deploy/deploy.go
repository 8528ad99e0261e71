// Package deploy makes AWS match a desired stack (aws/model): it lists what
// herald owns by its ownership tag once per reconcile, matches it to the
// stack with pure diff functions, creates and updates, and deletes last.
//
// Every step is idempotent and every resource is tagged when it is created
// (never in a later call), so a crash between any two calls leaves only
// resources the next reconcile finds by tag and adopts: never a second load
// balancer, never an orphan.
package deploy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/aws/api"
	"github.com/heraldlb/herald/aws/build"
	"github.com/heraldlb/herald/aws/model"
)

// AWS is what deploy needs from AWS: api.Cache implements it.
type AWS interface {
	LoadBalancers(ctx context.Context) ([]api.LoadBalancer, error)
	TargetGroups(ctx context.Context) ([]api.TargetGroup, error)
	Listeners(ctx context.Context, lbARN string) ([]api.Listener, error)
	LoadBalancerAttributes(ctx context.Context, arn string) (map[string]string, error)
	TargetGroupAttributes(ctx context.Context, arn string) (map[string]string, error)
	Targets(ctx context.Context, tgARN string) ([]api.TargetHealth, error)
	SecurityGroups(ctx context.Context, ids []string, filters ...api.Filter) ([]api.SecurityGroup, error)
	Subnets(ctx context.Context, ids []string, filters ...api.Filter) ([]api.Subnet, error)
	Instances(ctx context.Context, ids []string) ([]api.Instance, error)

	CreateLoadBalancer(ctx context.Context, in api.CreateLoadBalancerInput) (api.LoadBalancer, error)
	DeleteLoadBalancer(ctx context.Context, arn string) error
	ModifyLoadBalancerAttributes(ctx context.Context, arn string, attrs map[string]string) error
	SetSecurityGroups(ctx context.Context, arn string, groups []string) error
	AddTags(ctx context.Context, arn string, tags map[string]string) error
	RemoveTags(ctx context.Context, arn string, keys []string) error
	CreateListener(ctx context.Context, l api.Listener) (api.Listener, error)
	ModifyListener(ctx context.Context, l api.Listener) error
	DeleteListener(ctx context.Context, arn string) error
	CreateTargetGroup(ctx context.Context, tg api.TargetGroup) (api.TargetGroup, error)
	ModifyTargetGroup(ctx context.Context, arn string, hc api.HealthCheck) error
	DeleteTargetGroup(ctx context.Context, arn string) error
	ModifyTargetGroupAttributes(ctx context.Context, arn string, attrs map[string]string) error
	RegisterTargets(ctx context.Context, tgARN string, targets []api.Target) error
	DeregisterTargets(ctx context.Context, tgARN string, targets []api.Target) error
	CreateSecurityGroup(ctx context.Context, name, description, vpcID string, tags map[string]string) (string, error)
	AddGroup(ids []string, filters []api.Filter, g api.SecurityGroup)
	DeleteSecurityGroup(ctx context.Context, id string) error
	AuthorizeIngress(ctx context.Context, groupID string, rules []api.Permission) error
	RevokeIngress(ctx context.Context, groupID string, rules []api.Permission) error
	TagSecurityGroup(ctx context.Context, groupID string, tags map[string]string) error
	UntagSecurityGroup(ctx context.Context, groupID string, keys []string) error
	Invalidate()
}

// Config is the cluster-wide setting of a Deployer.
type Config struct {
	ClusterName string
	VPCID       string
	// NodeSecurityGroups get the NodePort rules; empty means the groups
	// tagged kubernetes.io/cluster/<name> that herald did not create.
	NodeSecurityGroups []string
	// NodePortRange is the apiserver's; zero means the default.
	NodePortRange build.PortRange
}

// Deployer reconciles stacks.
type Deployer struct {
	aws AWS
	cfg Config
	// rulesMu serialises the shared node rules (syncNodeRules).
	rulesMu sync.Mutex
}

// New returns a Deployer.
func New(aws AWS, cfg Config) *Deployer { return &Deployer{aws: aws, cfg: cfg} }

// ownedFilter lists the groups of this cluster, herald's and the nodes'.
func (d *Deployer) clusterGroupsFilter() []api.Filter {
	return []api.Filter{{Name: "tag-key", Values: []string{build.ClusterTagKey(d.cfg.ClusterName)}},
		{Name: "vpc-id", Values: []string{d.cfg.VPCID}}}
}

// ownedStack is what herald holds for one load balancer name.
type ownedStack struct {
	name, service, uid string
	lb                 *api.LoadBalancer
	tgs                []api.TargetGroup
	frontend           *api.SecurityGroup
}

// inventory lists everything this cluster's herald owns, grouped by load
// balancer name; the reads come from the cache, so this is free when warm.
func (d *Deployer) inventory(ctx context.Context) (map[string]*ownedStack, error) {
	lbs, err := d.aws.LoadBalancers(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing load balancers: %w", err)
	}
	tgs, err := d.aws.TargetGroups(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing target groups: %w", err)
	}
	groups, err := d.aws.SecurityGroups(ctx, nil, d.clusterGroupsFilter()...)
	if err != nil {
		return nil, fmt.Errorf("listing security groups: %w", err)
	}
	out := map[string]*ownedStack{}
	// The backend group belongs to the cluster, not to a stack: it has no
	// load-balancer tag, so get skips it.
	get := func(tags map[string]string) *ownedStack {
		if tags[build.TagCluster] != d.cfg.ClusterName || tags[build.TagLoadBalancer] == "" {
			return nil
		}
		name := tags[build.TagLoadBalancer]
		s, ok := out[name]
		if !ok {
			s = &ownedStack{name: name, service: tags[build.TagService], uid: tags[build.TagServiceUID]}
			out[name] = s
		}
		return s
	}
	for i := range lbs {
		if s := get(lbs[i].Tags); s != nil {
			s.lb = &lbs[i]
		}
	}
	for _, tg := range tgs {
		if s := get(tg.Tags); s != nil {
			s.tgs = append(s.tgs, tg)
		}
	}
	for i := range groups {
		if s := get(groups[i].Tags); s != nil {
			s.frontend = &groups[i]
		}
	}
	return out, nil
}

// Ensure makes stack exist and returns the load balancer's DNS name.
// statusHostnames are the hostnames the Service's status shows now: a load
// balancer the Service replaced is deleted only once the status has moved
// to the new one, so clients always have a working address.
func (d *Deployer) Ensure(ctx context.Context, stack *model.Stack, statusHostnames []string) (dnsName string, err error) {
	logger := klog.FromContext(ctx).WithValues("lb", stack.LoadBalancer.Name)
	ctx = klog.NewContext(ctx, logger)
	defer d.invalidateOnError(&err)
	inv, err := d.inventory(ctx)
	if err != nil {
		return "", err
	}
	if s := inv[stack.LoadBalancer.Name]; s != nil && s.service != stack.ServiceKey {
		return "", &ConflictError{Name: stack.LoadBalancer.Name, Owner: s.service}
	}
	groupIDs, frontendID, err := d.ensureFrontend(ctx, stack, inv[stack.LoadBalancer.Name])
	if err != nil {
		return "", err
	}
	lb, err := d.ensureLoadBalancer(ctx, stack, inv[stack.LoadBalancer.Name], groupIDs)
	if err != nil {
		return "", err
	}
	var existingTGs []api.TargetGroup
	if s := inv[stack.LoadBalancer.Name]; s != nil {
		existingTGs = s.tgs
	}
	tgARN, err := d.ensureTargetGroups(ctx, stack, existingTGs)
	if err != nil {
		return "", err
	}
	if err := d.ensureListeners(ctx, stack, lb.ARN, tgARN); err != nil {
		return "", err
	}
	if frontendID != "" {
		if err := d.syncNodeRules(ctx, stack.NodeRules); err != nil {
			return "", err
		}
	}
	// Delete last: target groups no listener uses any more, then stacks
	// this Service replaced once its status has moved away from them.
	for _, tg := range existingTGs {
		if !slices.Contains(mapValues(tgARN), tg.ARN) {
			logger.Info("Deleting target group no longer needed", "tg", tg.Name)
			if err := d.aws.DeleteTargetGroup(ctx, tg.ARN); err != nil {
				return "", fmt.Errorf("deleting target group %s: %w", tg.Name, err)
			}
		}
	}
	for _, other := range inv {
		if other.service != stack.ServiceKey || other.name == stack.LoadBalancer.Name {
			continue
		}
		if other.lb != nil && slices.Contains(statusHostnames, other.lb.DNSName) {
			logger.Info("Keeping replaced load balancer until the Service status moves", "old", other.name)
			continue
		}
		if err := d.deleteStack(ctx, other); err != nil {
			return "", err
		}
	}
	return lb.DNSName, nil
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// invalidateOnError drops the cache after a failed reconcile: a call that
// failed may still have changed AWS, and the next reconcile must see it.
func (d *Deployer) invalidateOnError(err *error) {
	if *err != nil {
		d.aws.Invalidate()
	}
}

// ConflictError is a load balancer name another Service's stack holds
// (two Services with the same aws-load-balancer-name annotation).
type ConflictError struct{ Name, Owner string }

func (e *ConflictError) Error() string {
	return fmt.Sprintf("load balancer name %q is already used by Service %s", e.Name, e.Owner)
}

// Reason is the event reason users see.
func (e *ConflictError) Reason() string { return "LoadBalancerNameConflict" }

// subnetMappings resolves the stack's subnet selection.
func (d *Deployer) subnetMappings(ctx context.Context, sel model.SubnetSelection) ([]api.SubnetMapping, error) {
	var subnets []api.Subnet
	if len(sel.IDsOrNames) == 0 {
		found, err := d.aws.Subnets(ctx, nil, api.Filter{Name: "tag:" + sel.DiscoverRoleTag, Values: []string{"1", ""}},
			api.Filter{Name: "vpc-id", Values: []string{d.cfg.VPCID}})
		if err != nil {
			return nil, fmt.Errorf("discovering subnets: %w", err)
		}
		subnets = onePerZone(found)
		if len(subnets) == 0 {
			return nil, &SubnetError{Message: "no subnet in VPC " + d.cfg.VPCID + " is tagged " + sel.DiscoverRoleTag}
		}
	} else {
		for _, ref := range sel.IDsOrNames {
			var found []api.Subnet
			var err error
			if strings.HasPrefix(ref, "subnet-") {
				found, err = d.aws.Subnets(ctx, []string{ref})
			} else {
				found, err = d.aws.Subnets(ctx, nil, api.Filter{Name: "tag:Name", Values: []string{ref}},
					api.Filter{Name: "vpc-id", Values: []string{d.cfg.VPCID}})
			}
			if err != nil || len(found) != 1 {
				return nil, &SubnetError{Message: fmt.Sprintf("subnet %q: not exactly one found (%d, %v)", ref, len(found), err)}
			}
			subnets = append(subnets, found[0])
		}
	}
	out := make([]api.SubnetMapping, len(subnets))
	for i, s := range subnets {
		out[i].SubnetID = s.ID
		if i < len(sel.EIPAllocations) {
			out[i].AllocationID = sel.EIPAllocations[i]
		}
		if i < len(sel.PrivateIPv4Addresses) {
			out[i].PrivateIPv4Address = sel.PrivateIPv4Addresses[i]
		}
	}
	return out, nil
}

// onePerZone picks, per availability zone, the subnet with the lowest ID,
// so discovery is stable across reconciles.
func onePerZone(subnets []api.Subnet) []api.Subnet {
	slices.SortFunc(subnets, func(a, b api.Subnet) int { return strings.Compare(a.ID, b.ID) })
	seen := map[string]bool{}
	var out []api.Subnet
	for _, s := range subnets {
		if !seen[s.Zone] {
			seen[s.Zone] = true
			out = append(out, s)
		}
	}
	return out
}

// SubnetError is a subnet selection AWS cannot satisfy.
type SubnetError struct{ Message string }

func (e *SubnetError) Error() string { return e.Message }

// Reason is the event reason users see.
func (e *SubnetError) Reason() string { return "SubnetNotFound" }

func (d *Deployer) ensureLoadBalancer(ctx context.Context, stack *model.Stack, owned *ownedStack, groups []string) (api.LoadBalancer, error) {
	want := stack.LoadBalancer
	var lb api.LoadBalancer
	if owned != nil && owned.lb != nil {
		lb = *owned.lb
		if !slices.Equal(sortedCopy(lb.SecurityGroups), sortedCopy(groups)) {
			if err := d.aws.SetSecurityGroups(ctx, lb.ARN, groups); err != nil {
				return lb, fmt.Errorf("setting security groups: %w", err)
			}
		}
		if err := syncTags("load balancer", want.Tags, lb.Tags,
			func(t map[string]string) error { return d.aws.AddTags(ctx, lb.ARN, t) },
			func(keys []string) error { return d.aws.RemoveTags(ctx, lb.ARN, keys) }); err != nil {
			return lb, err
		}
	} else {
		subnets, err := d.subnetMappings(ctx, want.Subnets)
		if err != nil {
			return lb, err
		}
		klog.FromContext(ctx).Info("Creating load balancer", "scheme", want.Scheme, "subnets", len(subnets))
		lb, err = d.aws.CreateLoadBalancer(ctx, api.CreateLoadBalancerInput{Name: want.Name, Scheme: want.Scheme,
			IPAddressType: want.IPAddressType, Subnets: subnets, SecurityGroups: groups, Tags: want.Tags})
		if err != nil {
			return lb, fmt.Errorf("creating load balancer %s: %w", want.Name, err)
		}
	}
	if len(want.Attributes) == 0 {
		return lb, nil
	}
	current, err := d.aws.LoadBalancerAttributes(ctx, lb.ARN)
	if err != nil {
		return lb, fmt.Errorf("reading load balancer attributes: %w", err)
	}
	if changed := changedAttributes(want.Attributes, current); len(changed) > 0 {
		if err := d.aws.ModifyLoadBalancerAttributes(ctx, lb.ARN, changed); err != nil {
			return lb, fmt.Errorf("setting load balancer attributes: %w", err)
		}
	}
	return lb, nil
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func (d *Deployer) ensureListeners(ctx context.Context, stack *model.Stack, lbARN string, tgARN map[string]string) error {
	current, err := d.aws.Listeners(ctx, lbARN)
	if err != nil {
		return fmt.Errorf("listing listeners: %w", err)
	}
	plan := diffListeners(lbARN, stack.Listeners, tgARN, current)
	for _, l := range plan.create {
		l.Tags = stack.LoadBalancer.Tags
		if _, err := d.aws.CreateListener(ctx, l); err != nil {
			return fmt.Errorf("creating listener on port %d: %w", l.Port, err)
		}
	}
	for _, l := range plan.modify {
		if err := d.aws.ModifyListener(ctx, l); err != nil {
			return fmt.Errorf("updating listener on port %d: %w", l.Port, err)
		}
	}
	for _, arn := range plan.remove {
		if err := d.aws.DeleteListener(ctx, arn); err != nil && !api.IsCode(err, api.CodeListenerNotFound) {
			return fmt.Errorf("deleting listener: %w", err)
		}
	}
	return nil
}

// isGone reports errors that mean "already deleted".
func isGone(err error) bool {
	return api.IsCode(err, api.CodeLoadBalancerNotFound) || api.IsCode(err, api.CodeTargetGroupNotFound) ||
		api.IsCode(err, api.CodeGroupNotFound) || api.IsCode(err, api.CodePermissionNotFound)
}
