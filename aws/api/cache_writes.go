package api

import (
	"context"
	"maps"
	"slices"
)

// Writes go to AWS, then into the cache, so the cache tells what AWS holds
// without reading it back. A failed write leaves the cache alone; the
// caller invalidates it at the end of a failed reconcile.

// CreateLoadBalancer creates (or, with identical settings, adopts) a
// network load balancer.
func (c *Cache) CreateLoadBalancer(ctx context.Context, in CreateLoadBalancerInput) (LoadBalancer, error) {
	lb, err := c.elb.CreateLoadBalancer(ctx, in)
	if err != nil {
		return lb, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lbs != nil {
		c.lbs = slices.DeleteFunc(c.lbs, func(x LoadBalancer) bool { return x.ARN == lb.ARN })
		c.lbs = append(c.lbs, lb)
	}
	c.tags[lb.ARN] = maps.Clone(lb.Tags)
	if _, known := c.lsn[lb.ARN]; !known && lb.State == "provisioning" {
		// A load balancer AWS just created has no listeners: no need to
		// ask. (An identical create that returned an existing, active one
		// may have some, so those are read.)
		c.lsn[lb.ARN] = []Listener{}
	}
	return lb, nil
}

// DeleteLoadBalancer deletes a load balancer and, with it, its listeners.
func (c *Cache) DeleteLoadBalancer(ctx context.Context, arn string) error {
	if err := c.elb.DeleteLoadBalancer(ctx, arn); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lbs = deleteARN(c.lbs, func(lb LoadBalancer) string { return lb.ARN }, arn)
	delete(c.lsn, arn)
	delete(c.lbAttr, arn)
	delete(c.tags, arn)
	return nil
}

// deleteARN removes the item with arn, keeping nil (not loaded) as nil.
func deleteARN[T any](items []T, arnOf func(T) string, arn string) []T {
	if items == nil {
		return nil
	}
	return slices.DeleteFunc(items, func(x T) bool { return arnOf(x) == arn })
}

// ModifyLoadBalancerAttributes sets attributes.
func (c *Cache) ModifyLoadBalancerAttributes(ctx context.Context, arn string, attrs map[string]string) error {
	if err := c.elb.ModifyLoadBalancerAttributes(ctx, arn, attrs); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.lbAttr[arn]; ok {
		maps.Copy(cur, attrs)
	}
	return nil
}

// SetSecurityGroups replaces a load balancer's security groups.
func (c *Cache) SetSecurityGroups(ctx context.Context, arn string, groups []string) error {
	if err := c.elb.SetSecurityGroups(ctx, arn, groups); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.lbs {
		if c.lbs[i].ARN == arn {
			c.lbs[i].SecurityGroups = slices.Clone(groups)
		}
	}
	return nil
}

// AddTags adds or overwrites tags.
func (c *Cache) AddTags(ctx context.Context, arn string, tags map[string]string) error {
	if err := c.elb.AddTags(ctx, arn, tags); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.updateTags(arn, func(t map[string]string) { maps.Copy(t, tags) })
	return nil
}

// RemoveTags removes tags by key.
func (c *Cache) RemoveTags(ctx context.Context, arn string, keys []string) error {
	if err := c.elb.RemoveTags(ctx, arn, keys); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.updateTags(arn, func(t map[string]string) {
		for _, k := range keys {
			delete(t, k)
		}
	})
	return nil
}

// updateTags edits the tags of arn wherever they are cached; callers hold mu.
func (c *Cache) updateTags(arn string, edit func(map[string]string)) {
	t := maps.Clone(c.tags[arn])
	if t == nil {
		t = map[string]string{}
	}
	edit(t)
	c.tags[arn] = t
	for i := range c.lbs {
		if c.lbs[i].ARN == arn {
			c.lbs[i].Tags = maps.Clone(t)
		}
	}
	for i := range c.tgs {
		if c.tgs[i].ARN == arn {
			c.tgs[i].Tags = maps.Clone(t)
		}
	}
}

// CreateListener adds a listener.
func (c *Cache) CreateListener(ctx context.Context, l Listener) (Listener, error) {
	created, err := c.elb.CreateListener(ctx, l)
	if err != nil {
		return created, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.lsn[l.LoadBalancerARN]; ok {
		c.lsn[l.LoadBalancerARN] = append(deleteARN(cur, func(x Listener) string { return x.ARN }, created.ARN), created)
	}
	return created, nil
}

// ModifyListener changes a listener in place.
func (c *Cache) ModifyListener(ctx context.Context, l Listener) error {
	if err := c.elb.ModifyListener(ctx, l); err != nil {
		return err
	}
	l.Tags = nil
	c.mu.Lock()
	defer c.mu.Unlock()
	for lb, ls := range c.lsn {
		for i := range ls {
			if ls[i].ARN == l.ARN {
				c.lsn[lb][i] = l
			}
		}
	}
	return nil
}

// DeleteListener removes a listener.
func (c *Cache) DeleteListener(ctx context.Context, arn string) error {
	if err := c.elb.DeleteListener(ctx, arn); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for lb, ls := range c.lsn {
		c.lsn[lb] = deleteARN(ls, func(x Listener) string { return x.ARN }, arn)
	}
	return nil
}

// CreateTargetGroup creates (or, with identical settings, adopts) a target group.
func (c *Cache) CreateTargetGroup(ctx context.Context, tg TargetGroup) (TargetGroup, error) {
	created, err := c.elb.CreateTargetGroup(ctx, tg)
	if err != nil {
		return created, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tgs != nil {
		c.tgs = append(deleteARN(c.tgs, func(x TargetGroup) string { return x.ARN }, created.ARN), created)
	}
	c.tags[created.ARN] = maps.Clone(created.Tags)
	if _, known := c.health[created.ARN]; !known && len(created.LoadBalancerARNs) == 0 {
		// A target group no listener uses is one herald just created: it
		// has no targets, no need to ask. (Adopting one a crash left
		// before its listener, unseen by the inventory, could at worst
		// register targets again, which AWS accepts as a no-op.)
		c.health[created.ARN] = []TargetHealth{}
	}
	return created, nil
}

// ModifyTargetGroup changes a target group's health check.
func (c *Cache) ModifyTargetGroup(ctx context.Context, arn string, hc HealthCheck) error {
	if err := c.elb.ModifyTargetGroup(ctx, arn, hc); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.tgs {
		if c.tgs[i].ARN == arn {
			c.tgs[i].HealthCheck = hc
		}
	}
	return nil
}

// DeleteTargetGroup deletes a target group.
func (c *Cache) DeleteTargetGroup(ctx context.Context, arn string) error {
	if err := c.elb.DeleteTargetGroup(ctx, arn); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tgs = deleteARN(c.tgs, func(x TargetGroup) string { return x.ARN }, arn)
	delete(c.tgAttr, arn)
	delete(c.health, arn)
	delete(c.tags, arn)
	return nil
}

// ModifyTargetGroupAttributes sets target group attributes.
func (c *Cache) ModifyTargetGroupAttributes(ctx context.Context, arn string, attrs map[string]string) error {
	if err := c.elb.ModifyTargetGroupAttributes(ctx, arn, attrs); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.tgAttr[arn]; ok {
		maps.Copy(cur, attrs)
	}
	return nil
}

// RegisterTargets adds targets in one call.
func (c *Cache) RegisterTargets(ctx context.Context, tgARN string, targets []Target) error {
	if err := c.elb.RegisterTargets(ctx, tgARN, targets); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.health[tgARN]; ok {
		for _, t := range targets {
			if !slices.ContainsFunc(cur, func(h TargetHealth) bool { return h.Target == t }) {
				cur = append(cur, TargetHealth{Target: t, State: "initial"})
			}
		}
		c.health[tgARN] = cur
	}
	return nil
}

// DeregisterTargets removes targets in one call.
func (c *Cache) DeregisterTargets(ctx context.Context, tgARN string, targets []Target) error {
	if err := c.elb.DeregisterTargets(ctx, tgARN, targets); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.health[tgARN]; ok {
		c.health[tgARN] = slices.DeleteFunc(cur, func(h TargetHealth) bool { return slices.Contains(targets, h.Target) })
	}
	return nil
}

// CreateSecurityGroup creates a group; it shows in cached queries only
// after Invalidate or AddGroup, since the cache cannot evaluate filters.
func (c *Cache) CreateSecurityGroup(ctx context.Context, name, description, vpcID string, tags map[string]string) (string, error) {
	return c.ec2.CreateSecurityGroup(ctx, name, description, vpcID, tags)
}

// AddGroup records a group herald created in the cached query key.
func (c *Cache) AddGroup(ids []string, filters []Filter, g SecurityGroup) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := queryKey(ids, filters)
	if cur, ok := c.groups[key]; ok {
		c.groups[key] = append(slices.DeleteFunc(cur, func(x SecurityGroup) bool { return x.ID == g.ID }), g)
	}
}

// DeleteSecurityGroup deletes a group.
func (c *Cache) DeleteSecurityGroup(ctx context.Context, id string) error {
	if err := c.ec2.DeleteSecurityGroup(ctx, id); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, groups := range c.groups {
		c.groups[key] = slices.DeleteFunc(groups, func(g SecurityGroup) bool { return g.ID == id })
	}
	return nil
}

// AuthorizeIngress adds rules to a group.
func (c *Cache) AuthorizeIngress(ctx context.Context, groupID string, rules []Permission) error {
	if err := c.ec2.AuthorizeIngress(ctx, groupID, rules); err != nil {
		return err
	}
	c.editGroup(groupID, func(g *SecurityGroup) { g.Ingress = append(g.Ingress, rules...) })
	return nil
}

// RevokeIngress removes rules from a group.
func (c *Cache) RevokeIngress(ctx context.Context, groupID string, rules []Permission) error {
	if err := c.ec2.RevokeIngress(ctx, groupID, rules); err != nil {
		return err
	}
	c.editGroup(groupID, func(g *SecurityGroup) {
		g.Ingress = slices.DeleteFunc(g.Ingress, func(p Permission) bool {
			return slices.ContainsFunc(rules, func(r Permission) bool { return r.Key() == p.Key() })
		})
	})
	return nil
}

// TagSecurityGroup adds or overwrites a group's tags.
func (c *Cache) TagSecurityGroup(ctx context.Context, groupID string, tags map[string]string) error {
	if err := c.ec2.TagSecurityGroup(ctx, groupID, tags); err != nil {
		return err
	}
	c.editGroup(groupID, func(g *SecurityGroup) {
		g.Tags = maps.Clone(g.Tags)
		if g.Tags == nil {
			g.Tags = map[string]string{}
		}
		maps.Copy(g.Tags, tags)
	})
	return nil
}

// UntagSecurityGroup removes a group's tags by key.
func (c *Cache) UntagSecurityGroup(ctx context.Context, groupID string, keys []string) error {
	if err := c.ec2.UntagSecurityGroup(ctx, groupID, keys); err != nil {
		return err
	}
	c.editGroup(groupID, func(g *SecurityGroup) {
		g.Tags = maps.Clone(g.Tags)
		for _, k := range keys {
			delete(g.Tags, k)
		}
	})
	return nil
}

func (c *Cache) editGroup(id string, edit func(*SecurityGroup)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, groups := range c.groups {
		for i := range groups {
			if groups[i].ID == id {
				edit(&groups[i])
			}
		}
	}
}

// Instances is not cached: node lifecycle questions need a fresh answer.
func (c *Cache) Instances(ctx context.Context, ids []string) ([]Instance, error) {
	return c.ec2.Instances(ctx, ids)
}
