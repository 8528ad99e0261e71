package deploy

import (
	"context"
	"fmt"
	"slices"

	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/aws/api"
	"github.com/heraldlb/herald/aws/model"
)

// ensureTargetGroups creates missing target groups, updates health checks,
// attributes and targets of existing ones, and returns their ARNs by key.
func (d *Deployer) ensureTargetGroups(ctx context.Context, stack *model.Stack, existing []api.TargetGroup) (map[string]string, error) {
	byName := map[string]api.TargetGroup{}
	for _, tg := range existing {
		byName[tg.Name] = tg
	}
	arns := map[string]string{}
	for _, want := range stack.TargetGroups {
		tg, ok := byName[want.Name]
		if !ok {
			klog.FromContext(ctx).Info("Creating target group", "tg", want.Name, "port", want.Port)
			created, err := d.aws.CreateTargetGroup(ctx, api.TargetGroup{Name: want.Name, Protocol: want.Protocol,
				Port: want.Port, TargetType: want.TargetType, IPAddressType: want.IPAddressType, VPCID: d.cfg.VPCID,
				HealthCheck: healthCheckOf(want.HealthCheck), Tags: want.Tags})
			if err != nil {
				return nil, fmt.Errorf("creating target group %s: %w", want.Name, err)
			}
			tg = created
		} else if err := d.updateTargetGroup(ctx, want, tg); err != nil {
			return nil, err
		}
		arns[want.Key] = tg.ARN
		if err := d.ensureTargetGroupAttributes(ctx, want, tg.ARN); err != nil {
			return nil, err
		}
		if err := d.ensureTargets(ctx, want, tg.ARN); err != nil {
			return nil, err
		}
	}
	return arns, nil
}

func (d *Deployer) updateTargetGroup(ctx context.Context, want model.TargetGroup, tg api.TargetGroup) error {
	if hc := healthCheckOf(want.HealthCheck); hc != tg.HealthCheck {
		if err := d.aws.ModifyTargetGroup(ctx, tg.ARN, hc); err != nil {
			return fmt.Errorf("updating health check of %s: %w", want.Name, err)
		}
	}
	return syncTags("target group "+want.Name, want.Tags, tg.Tags,
		func(t map[string]string) error { return d.aws.AddTags(ctx, tg.ARN, t) },
		func(keys []string) error { return d.aws.RemoveTags(ctx, tg.ARN, keys) })
}

func (d *Deployer) ensureTargetGroupAttributes(ctx context.Context, want model.TargetGroup, arn string) error {
	if len(want.Attributes) == 0 {
		return nil
	}
	current, err := d.aws.TargetGroupAttributes(ctx, arn)
	if err != nil {
		return fmt.Errorf("reading attributes of %s: %w", want.Name, err)
	}
	if changed := changedAttributes(want.Attributes, current); len(changed) > 0 {
		if err := d.aws.ModifyTargetGroupAttributes(ctx, arn, changed); err != nil {
			return fmt.Errorf("setting attributes of %s: %w", want.Name, err)
		}
	}
	return nil
}

// ensureTargets registers and deregisters the difference, each in one
// batched call.
func (d *Deployer) ensureTargets(ctx context.Context, want model.TargetGroup, arn string) error {
	current, err := d.aws.Targets(ctx, arn)
	if err != nil {
		return fmt.Errorf("reading targets of %s: %w", want.Name, err)
	}
	add, remove := diffTargets(want.Targets, current)
	if len(add) > 0 {
		err := d.aws.RegisterTargets(ctx, arn, add)
		if api.IsCode(err, api.CodeInvalidTarget) {
			// A node whose instance is gone or stopped: register the
			// others rather than let one dead node block everyone.
			add, err = d.runningOnly(ctx, add)
			if err == nil && len(add) > 0 {
				err = d.aws.RegisterTargets(ctx, arn, add)
			}
		}
		if err != nil {
			return fmt.Errorf("registering %d targets in %s: %w", len(add), want.Name, err)
		}
		klog.FromContext(ctx).V(2).Info("Registered targets", "tg", want.Name, "count", len(add))
	}
	if len(remove) > 0 {
		if err := d.aws.DeregisterTargets(ctx, arn, remove); err != nil {
			return fmt.Errorf("deregistering %d targets from %s: %w", len(remove), want.Name, err)
		}
		klog.FromContext(ctx).V(2).Info("Deregistered targets", "tg", want.Name, "count", len(remove))
	}
	return nil
}

func (d *Deployer) runningOnly(ctx context.Context, targets []api.Target) ([]api.Target, error) {
	ids := make([]string, 0, len(targets))
	for _, t := range targets {
		ids = append(ids, t.ID)
	}
	instances, err := d.aws.Instances(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("checking instances: %w", err)
	}
	running := map[string]bool{}
	for _, in := range instances {
		running[in.ID] = in.State == "running"
	}
	return slices.DeleteFunc(slices.Clone(targets), func(t api.Target) bool { return !running[t.ID] }), nil
}
