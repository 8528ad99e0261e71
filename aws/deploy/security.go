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

// ensureFrontend returns the groups to attach to the load balancer and,
// when herald manages it, the frontend group's ID.
func (d *Deployer) ensureFrontend(ctx context.Context, stack *model.Stack, owned *ownedStack) (groups []string, frontendID string, err error) {
	if stack.Frontend == nil {
		groups, err := d.userGroups(ctx, stack.LoadBalancer.SecurityGroups)
		return groups, "", err
	}
	var sg api.SecurityGroup
	if owned != nil && owned.frontend != nil {
		sg = *owned.frontend
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
	return []string{sg.ID}, sg.ID, nil
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
		if g.Tags[build.TagCluster] == "" { // not one of herald's frontends
			out = append(out, g)
		}
	}
	return out, nil
}

// ensureNodeRules makes the nodes' groups hold exactly want for one load
// balancer: rules from its frontend group, or with its description.
func (d *Deployer) ensureNodeRules(ctx context.Context, want []api.Permission, description, frontendID string) error {
	groups, err := d.nodeGroups(ctx)
	if err != nil {
		return fmt.Errorf("listing node security groups: %w", err)
	}
	if len(groups) == 0 && len(want) > 0 {
		klog.FromContext(ctx).Info("No node security group found: NodePorts must be open to the load balancer by other means")
	}
	owned := func(p api.Permission) bool {
		return p.Description == description || frontendID != "" && p.SourceGroup == frontendID
	}
	for _, g := range groups {
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
	return nil
}
