package baremetal

import (
	"context"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/pools"
)

// applyPools gives the allocator the config pools plus the valid
// IPAddressPools. Removed pools keep their Services' addresses until those
// Services go; they just give no new ones.
func (b *Backend) applyPools(ctx context.Context, objects []*v1alpha1.IPAddressPool) (pools.Report, error) {
	set := pools.Desired(b.configPools, objects)
	conflicts, err := b.alloc.SetPools(set.Pools)
	if err != nil {
		return pools.Report{}, fmt.Errorf("setting address pools: %w", err)
	}
	klog.FromContext(ctx).V(2).Info("Address pools applied", "pools", len(set.Pools), "invalid", len(set.Invalid))
	return pools.Report{Set: set, Conflicts: conflicts, Usage: b.updateMetrics()}, nil
}

// poolTarget is the pool controller's view of the backend.
type poolTarget struct{ b *Backend }

var _ pools.Target = poolTarget{}

func (t poolTarget) ApplyPools(ctx context.Context, objects []*v1alpha1.IPAddressPool) (pools.Report, error) {
	return t.b.applyPools(ctx, objects)
}

func (t poolTarget) Serving() bool { return t.b.ready() == nil }
