package deploy

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/aws/api"
	"github.com/heraldlb/herald/aws/build"
	"github.com/heraldlb/herald/aws/model"
)

// ensureFrontend returns the groups to attach to the load balancer (the
// frontend group and the cluster's backend group) and, when herald manages
// them, the frontend group's ID.
func (d *Deployer) ensureFrontend(ctx context.Context, stack *model.Stack, owned *ownedStack) (groups []string, frontendID string, err error) {
	if stack.Frontend == nil {
		groups, err := d.userGroups(ctx, stack.LoadBalancer.SecurityGroups)
		return groups, "", err
	}
	backendID, err := d.ensureBackend(ctx)
	if err != nil {
		return nil, "", err
	}
	var sg api.SecurityGroup
	if owned != nil && owned.frontend != nil {
		sg = *owned.frontend
		// The additional-resource-tags annotation covers every resource
		// herald creates for the Service, this group too.
		if err := syncTags("security group "+sg.ID, stack.Frontend.Tags, sg.Tags,
			func(t map[string]string) error { return d.aws.TagSecurityGroup(ctx, sg.ID, t) },
			func(keys []string) error { return d.aws.UntagSecurityGroup(ctx, sg.ID, keys) }); err != nil {
			return nil, "", err
		}
	} else {
		klog.FromContext(ctx).Info("Creating frontend security group")
		id, err := d.aws.CreateSecurityGroup(ctx, stack.Frontend.Name, stack.Frontend.Description, d.cfg.VPCID, stack.Frontend.Tags)
		if err != nil {
			// A group created by a call whose answer was lost carries our
			// tags and is found by the next reconcile; a name taken by
			// anyone else is a conflict the user must see.
			return nil, "", fmt.Errorf("creating security group %s: %w", stack.Frontend.Name, err)
		}
		sg = api.SecurityGroup{ID: id, Name: stack.Frontend.Name, VPCID: d.cfg.VPCID, Tags: stack.Frontend.Tags}
		d.aws.AddGroup(nil, d.clusterGroupsFilter(), sg)
	}
	add, revoke := diffRules(frontendRules(stack.Frontend), sg.Ingress, func(api.Permission) bool { return true })
	if len(add) > 0 {
		if err := d.aws.AuthorizeIngress(ctx, sg.ID, add); err != nil {
			return nil, "", fmt.Errorf("opening listener ports on %s: %w", sg.ID, err)
		}
	}
	if len(revoke) > 0 {
		if err := d.aws.RevokeIngress(ctx, sg.ID, revoke); err != nil && !isGone(err) {
			return nil, "", fmt.Errorf("closing listener ports on %s: %w", sg.ID, err)
		}
	}
	return []string{sg.ID, backendID}, sg.ID, nil
}

// userGroups resolves the security-groups annotation (IDs or names).
func (d *Deployer) userGroups(ctx context.Context, refs []string) ([]string, error) {
	var out []string
	for _, ref := range refs {
		if strings.HasPrefix(ref, "sg-") {
			out = append(out, ref)
			continue
		}
		found, err := d.aws.SecurityGroups(ctx, nil, api.Filter{Name: "group-name", Values: []string{ref}},
			api.Filter{Name: "vpc-id", Values: []string{d.cfg.VPCID}})
		if err != nil {
			return nil, fmt.Errorf("resolving security group %q: %w", ref, err)
		}
		if len(found) != 1 {
			return nil, &SecurityGroupError{Ref: ref}
		}
		out = append(out, found[0].ID)
	}
	return out, nil
}

// SecurityGroupError is a security-groups annotation naming no group.
type SecurityGroupError struct{ Ref string }

func (e *SecurityGroupError) Error() string {
	return fmt.Sprintf("security group %q not found in the cluster's VPC", e.Ref)
}

// Reason is the event reason users see.
func (e *SecurityGroupError) Reason() string { return "SecurityGroupNotFound" }

// nodeGroups returns the nodes' security groups, with their rules.
func (d *Deployer) nodeGroups(ctx context.Context) ([]api.SecurityGroup, error) {
	if len(d.cfg.NodeSecurityGroups) > 0 {
		return d.aws.SecurityGroups(ctx, d.cfg.NodeSecurityGroups)
	}
	all, err := d.aws.SecurityGroups(ctx, nil, d.clusterGroupsFilter()...)
	if err != nil {
		return nil, err
	}
	var out []api.SecurityGroup
	for _, g := range all {
		if g.Tags[build.TagCluster] == "" { // not one of herald's own groups
			out = append(out, g)
		}
	}
	return out, nil
}

// ensureBackend returns the cluster's shared backend group, creating it
// (tagged, in one call) when missing.
func (d *Deployer) ensureBackend(ctx context.Context) (string, error) {
	// One creator at a time: parallel workers would all see it missing,
	// and all but one fail on the duplicate name.
	d.rulesMu.Lock()
	defer d.rulesMu.Unlock()
	groups, err := d.aws.SecurityGroups(ctx, nil, d.clusterGroupsFilter()...)
	if err != nil {
		return "", fmt.Errorf("listing security groups: %w", err)
	}
	for _, g := range groups {
		if isBackend(g, d.cfg.ClusterName) {
			return g.ID, nil
		}
	}
	want := build.BackendGroup(d.buildOptions())
	klog.FromContext(ctx).Info("Creating the cluster's backend security group", "name", want.Name)
	id, err := d.aws.CreateSecurityGroup(ctx, want.Name, want.Description, d.cfg.VPCID, want.Tags)
	if err != nil {
		return "", fmt.Errorf("creating security group %s: %w", want.Name, err)
	}
	d.aws.AddGroup(nil, d.clusterGroupsFilter(), api.SecurityGroup{ID: id, Name: want.Name, VPCID: d.cfg.VPCID, Tags: want.Tags})
	return id, nil
}

func isBackend(g api.SecurityGroup, cluster string) bool {
	return g.Tags[build.TagCluster] == cluster && g.Tags[build.TagRole] == build.RoleBackend
}

func (d *Deployer) buildOptions() build.Options {
	return build.Options{ClusterName: d.cfg.ClusterName, NodePortRange: d.cfg.NodePortRange}
}

// syncNodeRules makes the nodes' groups admit the backend group on exactly
// the ports herald's target groups need: the union over every owned target
// group, recomputed from the (cached) inventory. It runs under rulesMu, so
// a worker removing a rule it no longer sees needed cannot interleave with
// another adding a target group that needs it: the adder's own sync comes
// after its creation and restores the rule. With no stack left it removes
// the rules and the backend group itself.
func (d *Deployer) syncNodeRules(ctx context.Context, extra []model.NodeRule) error {
	d.rulesMu.Lock()
	defer d.rulesMu.Unlock()
	inv, err := d.inventory(ctx)
	if err != nil {
		return err
	}
	groups, err := d.aws.SecurityGroups(ctx, nil, d.clusterGroupsFilter()...)
	if err != nil {
		return fmt.Errorf("listing security groups: %w", err)
	}
	var backend *api.SecurityGroup
	for i := range groups {
		if isBackend(groups[i], d.cfg.ClusterName) {
			backend = &groups[i]
		}
	}
	if backend == nil {
		return nil
	}
	needed := append([]model.NodeRule{}, extra...)
	for _, s := range inv {
		for _, tg := range s.tgs {
			needed = append(needed, build.NodeRules(tg.Protocol, tg.Port, tg.HealthCheck.Port, d.portRange())...)
		}
	}
	description := build.BackendRuleDescription(d.cfg.ClusterName)
	var want []api.Permission
	for _, r := range build.SortRules(needed) {
		want = append(want, api.Permission{Protocol: r.Protocol, FromPort: r.FromPort, ToPort: r.ToPort,
			SourceGroup: backend.ID, Description: description})
	}
	nodes, err := d.nodeGroups(ctx)
	if err != nil {
		return fmt.Errorf("listing node security groups: %w", err)
	}
	if len(nodes) == 0 && len(want) > 0 {
		klog.FromContext(ctx).Info("No node security group found: NodePorts must be open to the load balancers by other means")
	}
	owned := func(p api.Permission) bool { return p.Description == description || p.SourceGroup == backend.ID }
	for _, g := range nodes {
		add, revoke := diffRules(want, g.Ingress, owned)
		if len(add) > 0 {
			if err := d.aws.AuthorizeIngress(ctx, g.ID, add); err != nil {
				return fmt.Errorf("opening NodePorts on %s: %w", g.ID, err)
			}
		}
		if len(revoke) > 0 {
			if err := d.aws.RevokeIngress(ctx, g.ID, revoke); err != nil && !isGone(err) {
				return fmt.Errorf("closing NodePorts on %s: %w", g.ID, err)
			}
		}
	}
	if len(want) == 0 && len(inv) == 0 {
		klog.FromContext(ctx).Info("No load balancer left: deleting the backend security group", "id", backend.ID)
		if err := d.aws.DeleteSecurityGroup(ctx, backend.ID); err != nil && !isGone(err) {
			return fmt.Errorf("deleting security group %s: %w", backend.ID, err)
		}
	}
	return nil
}

func (d *Deployer) portRange() build.PortRange {
	if d.cfg.NodePortRange == (build.PortRange{}) {
		return build.DefaultNodePortRange
	}
	return d.cfg.NodePortRange
}
