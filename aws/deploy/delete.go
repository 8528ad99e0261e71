package deploy

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"k8s.io/klog/v2"
)

// Delete removes every stack herald holds for the Service key, whatever
// its load balancer name (a replaced one included).
func (d *Deployer) Delete(ctx context.Context, serviceKey string) (err error) {
	defer d.invalidateOnError(&err)
	inv, err := d.inventory(ctx)
	if err != nil {
		return err
	}
	for _, name := range sortedNames(inv) {
		if s := inv[name]; s.service == serviceKey {
			if err := d.deleteStack(ctx, s); err != nil {
				return err
			}
		}
	}
	return nil
}

// Exists reports the DNS name of a load balancer herald holds for the
// Service, if any.
func (d *Deployer) Exists(ctx context.Context, serviceKey string) (string, bool, error) {
	inv, err := d.inventory(ctx)
	if err != nil {
		return "", false, err
	}
	for _, name := range sortedNames(inv) {
		if s := inv[name]; s.lb != nil && s.service == serviceKey {
			return s.lb.DNSName, true, nil
		}
	}
	return "", false, nil
}

func sortedNames(inv map[string]*ownedStack) []string {
	names := make([]string, 0, len(inv))
	for n := range inv {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// deleteStack deletes in dependency order: the load balancer (with its
// listeners), its target groups, its frontend group, and then the shared
// node rules no remaining target group needs. Each step treats "already gone" as done, so a rerun after a crash
// picks up where the last one stopped.
func (d *Deployer) deleteStack(ctx context.Context, s *ownedStack) error {
	logger := klog.FromContext(ctx).WithValues("lb", s.name)
	if s.lb != nil {
		logger.Info("Deleting load balancer")
		if err := d.aws.DeleteLoadBalancer(ctx, s.lb.ARN); err != nil && !isGone(err) {
			return fmt.Errorf("deleting load balancer %s: %w", s.name, err)
		}
	}
	for _, tg := range s.tgs {
		if err := d.aws.DeleteTargetGroup(ctx, tg.ARN); err != nil && !isGone(err) {
			return fmt.Errorf("deleting target group %s: %w", tg.Name, err)
		}
	}
	if s.frontend != nil {
		if err := d.aws.DeleteSecurityGroup(ctx, s.frontend.ID); err != nil && !isGone(err) {
			return fmt.Errorf("deleting security group %s: %w", s.frontend.ID, err)
		}
	}
	// The shared node rules follow what is left; the last stack takes the
	// backend group with it.
	return d.syncNodeRules(ctx, nil)
}

// ServiceState is what GC needs to know about a Service.
type ServiceState struct {
	Exists    bool
	UID       string
	Hostnames []string
}

// Orphan is a stack whose Service is gone.
type Orphan struct {
	LoadBalancer, Service string
	Deleted               bool
}

// GC finds stacks whose Service is gone (or was recreated with another
// UID) and deletes them when remove is set; otherwise it only reports
// them. Stacks a live Service replaced are deleted in both modes once its
// status shows the new load balancer: that is the end of a replacement,
// not a guess about ownership.
func (d *Deployer) GC(ctx context.Context, lookup func(serviceKey string) ServiceState, remove bool) (orphans []Orphan, err error) {
	defer d.invalidateOnError(&err)
	inv, err := d.inventory(ctx)
	if err != nil {
		return nil, err
	}
	for _, name := range sortedNames(inv) {
		s := inv[name]
		state := lookup(s.service)
		switch {
		case !state.Exists || state.UID != s.uid:
			o := Orphan{LoadBalancer: name, Service: s.service}
			if remove {
				if err := d.deleteStack(ctx, s); err != nil {
					return orphans, err
				}
				o.Deleted = true
			}
			orphans = append(orphans, o)
		case s.lb != nil && !slices.Contains(state.Hostnames, s.lb.DNSName) && d.replacedBy(inv, s, state.Hostnames):
			klog.FromContext(ctx).Info("Deleting replaced load balancer", "lb", name, "service", s.service)
			if err := d.deleteStack(ctx, s); err != nil {
				return orphans, err
			}
		}
	}
	return orphans, nil
}

// replacedBy reports whether another stack of the same Service is the one
// its status shows.
func (d *Deployer) replacedBy(inv map[string]*ownedStack, s *ownedStack, hostnames []string) bool {
	for _, other := range inv {
		if other != s && other.service == s.service && other.lb != nil && slices.Contains(hostnames, other.lb.DNSName) {
			return true
		}
	}
	return false
}
