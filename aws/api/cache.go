package api

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// Cache keeps what herald read from AWS and what it wrote since, so that
// reconciling N Services after a node change costs one RegisterTargets per
// target group instead of N rounds of Describe* calls, and a no-op resync
// costs nothing at all. It is safe because herald only reads resources it
// owns, writes them through this cache, and drops the cache (Invalidate)
// after any failed reconcile, whose outcome it cannot know; TTL bounds how
// long a change made behind herald's back goes unseen.
type Cache struct {
	elb ELB
	ec2 EC2
	ttl time.Duration
	now func() time.Time

	// loadMu serialises loads, so concurrent misses load once.
	loadMu sync.Mutex
	mu     sync.Mutex
	since  time.Time
	lbs    []LoadBalancer // nil: not loaded
	tgs    []TargetGroup  // nil: not loaded
	tags   map[string]map[string]string
	lsn    map[string][]Listener
	lbAttr map[string]map[string]string
	tgAttr map[string]map[string]string
	health map[string][]TargetHealth
	groups map[string][]SecurityGroup // by query
	nets   map[string][]Subnet        // by query
}

// NewCache wraps elb and ec2; entries live at most ttl.
func NewCache(elb ELB, ec2 EC2, ttl time.Duration, now func() time.Time) *Cache {
	c := &Cache{elb: elb, ec2: ec2, ttl: ttl, now: now}
	c.reset()
	return c
}

func (c *Cache) reset() {
	c.since = c.now()
	c.lbs, c.tgs = nil, nil
	c.tags = map[string]map[string]string{}
	c.lsn = map[string][]Listener{}
	c.lbAttr = map[string]map[string]string{}
	c.tgAttr = map[string]map[string]string{}
	c.health = map[string][]TargetHealth{}
	c.groups = map[string][]SecurityGroup{}
	c.nets = map[string][]Subnet{}
}

// Invalidate forgets everything: the next reads go to AWS.
func (c *Cache) Invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reset()
}

// expire drops everything older than the TTL; callers hold mu.
func (c *Cache) expire() {
	if c.now().Sub(c.since) > c.ttl {
		c.reset()
	}
}

// cached runs load once per miss: get reports a hit (under mu), load
// fetches (without mu, under loadMu), put stores (under mu).
func cached[T any](c *Cache, get func() (T, bool), load func() (T, error), put func(T)) (T, error) {
	c.mu.Lock()
	c.expire()
	v, ok := get()
	c.mu.Unlock()
	if ok {
		return v, nil
	}
	c.loadMu.Lock()
	defer c.loadMu.Unlock()
	c.mu.Lock()
	v, ok = get() // another caller may have loaded it meanwhile
	c.mu.Unlock()
	if ok {
		return v, nil
	}
	v, err := load()
	if err != nil {
		return v, err
	}
	c.mu.Lock()
	put(v)
	c.mu.Unlock()
	return v, nil
}

// LoadBalancers returns every network load balancer, with tags.
func (c *Cache) LoadBalancers(ctx context.Context) ([]LoadBalancer, error) {
	return cached(c, func() ([]LoadBalancer, bool) { return slices.Clone(c.lbs), c.lbs != nil },
		func() ([]LoadBalancer, error) {
			lbs, err := c.elb.LoadBalancers(ctx)
			if err != nil {
				return nil, err
			}
			return withTags(ctx, c.elb, lbs, func(lb *LoadBalancer) (string, *map[string]string) { return lb.ARN, &lb.Tags })
		},
		func(lbs []LoadBalancer) {
			c.lbs = append([]LoadBalancer{}, lbs...)
			for _, lb := range lbs {
				c.tags[lb.ARN] = lb.Tags
			}
		})
}

// TargetGroups returns every target group, with tags.
func (c *Cache) TargetGroups(ctx context.Context) ([]TargetGroup, error) {
	return cached(c, func() ([]TargetGroup, bool) { return slices.Clone(c.tgs), c.tgs != nil },
		func() ([]TargetGroup, error) {
			tgs, err := c.elb.TargetGroups(ctx)
			if err != nil {
				return nil, err
			}
			return withTags(ctx, c.elb, tgs, func(tg *TargetGroup) (string, *map[string]string) { return tg.ARN, &tg.Tags })
		},
		func(tgs []TargetGroup) {
			c.tgs = append([]TargetGroup{}, tgs...)
			for _, tg := range tgs {
				c.tags[tg.ARN] = tg.Tags
			}
		})
}

// withTags fills in the tags of items, 20 per DescribeTags call.
func withTags[T any](ctx context.Context, elb ELB, items []T, field func(*T) (string, *map[string]string)) ([]T, error) {
	if len(items) == 0 {
		return []T{}, nil
	}
	arns := make([]string, len(items))
	for i := range items {
		arns[i], _ = field(&items[i])
	}
	tags, err := elb.Tags(ctx, arns)
	if err != nil {
		return nil, err
	}
	for i := range items {
		arn, dst := field(&items[i])
		*dst = tags[arn]
	}
	return items, nil
}

// Listeners returns the listeners of a load balancer.
func (c *Cache) Listeners(ctx context.Context, lbARN string) ([]Listener, error) {
	return cached(c, func() ([]Listener, bool) { v, ok := c.lsn[lbARN]; return slices.Clone(v), ok },
		func() ([]Listener, error) { return c.elb.Listeners(ctx, lbARN) },
		func(v []Listener) { c.lsn[lbARN] = slices.Clone(v) })
}

// LoadBalancerAttributes returns a load balancer's attributes.
func (c *Cache) LoadBalancerAttributes(ctx context.Context, arn string) (map[string]string, error) {
	return cached(c, func() (map[string]string, bool) { v, ok := c.lbAttr[arn]; return maps.Clone(v), ok },
		func() (map[string]string, error) { return c.elb.LoadBalancerAttributes(ctx, arn) },
		func(v map[string]string) { c.lbAttr[arn] = maps.Clone(v) })
}

// TargetGroupAttributes returns a target group's attributes.
func (c *Cache) TargetGroupAttributes(ctx context.Context, arn string) (map[string]string, error) {
	return cached(c, func() (map[string]string, bool) { v, ok := c.tgAttr[arn]; return maps.Clone(v), ok },
		func() (map[string]string, error) { return c.elb.TargetGroupAttributes(ctx, arn) },
		func(v map[string]string) { c.tgAttr[arn] = maps.Clone(v) })
}

// Targets returns the targets registered in a target group. Their health
// states are as first read; herald decides on membership only.
func (c *Cache) Targets(ctx context.Context, tgARN string) ([]TargetHealth, error) {
	return cached(c, func() ([]TargetHealth, bool) { v, ok := c.health[tgARN]; return slices.Clone(v), ok },
		func() ([]TargetHealth, error) { return c.elb.TargetHealth(ctx, tgARN) },
		func(v []TargetHealth) { c.health[tgARN] = slices.Clone(v) })
}

// SecurityGroups returns the groups matching ids and filters.
func (c *Cache) SecurityGroups(ctx context.Context, ids []string, filters ...Filter) ([]SecurityGroup, error) {
	key := queryKey(ids, filters)
	return cached(c, func() ([]SecurityGroup, bool) { v, ok := c.groups[key]; return cloneGroups(v), ok },
		func() ([]SecurityGroup, error) { return c.ec2.SecurityGroups(ctx, ids, filters...) },
		func(v []SecurityGroup) { c.groups[key] = cloneGroups(v) })
}

// Subnets returns the subnets matching ids and filters.
func (c *Cache) Subnets(ctx context.Context, ids []string, filters ...Filter) ([]Subnet, error) {
	key := queryKey(ids, filters)
	return cached(c, func() ([]Subnet, bool) { v, ok := c.nets[key]; return slices.Clone(v), ok },
		func() ([]Subnet, error) { return c.ec2.Subnets(ctx, ids, filters...) },
		func(v []Subnet) { c.nets[key] = slices.Clone(v) })
}

func queryKey(ids []string, filters []Filter) string {
	key := "ids=" + strings.Join(ids, ",")
	for _, f := range filters {
		key += ";" + f.Name + "=" + strings.Join(f.Values, ",")
	}
	return key
}

func cloneGroups(groups []SecurityGroup) []SecurityGroup {
	out := slices.Clone(groups)
	for i := range out {
		out[i].Ingress = slices.Clone(out[i].Ingress)
	}
	return out
}
