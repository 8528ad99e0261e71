package baremetal

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/ipam"
	"github.com/heraldlb/herald/bare-metal/pools"
)

// applyPools gives the allocator the config pools plus the valid
// IPAddressPools. Removed pools keep their Services' addresses until those
// Services go; they just give no new ones. When the pools changed, every
// Service is synced again: a waiting one may find an address, and one
// whose address moved to another pool shows it.
func (b *Backend) applyPools(ctx context.Context, objects []*v1alpha1.IPAddressPool) (pools.Report, error) {
	set := pools.Desired(b.configPools, objects)
	conflicts, err := b.alloc.SetPools(set.Pools)
	if err != nil {
		return pools.Report{}, fmt.Errorf("setting address pools: %w", err)
	}
	report := pools.Report{Set: set, Conflicts: conflicts, Usage: b.updateMetrics()}
	fingerprint := poolsFingerprint(set.Pools)
	b.poolsMu.Lock()
	changed := fingerprint != b.poolsApplied
	b.poolsApplied = fingerprint
	b.poolsMu.Unlock()
	if !changed {
		return report, nil
	}
	klog.FromContext(ctx).Info("Address pools changed", "pools", len(set.Pools), "invalid", len(set.Invalid), "conflicts", len(conflicts))
	if b.ready() == nil {
		b.env.Requeue.RequeueAll()
	}
	return report, nil
}

// poolsFingerprint tells one pool configuration from another: what the
// allocator does with each pool, in the order that decides overlaps.
func poolsFingerprint(configured []ipam.Pool) string {
	var b strings.Builder
	for _, p := range configured {
		fmt.Fprintf(&b, "%s|%t|%t|%d|%s|%s", strconv.Quote(p.Name), p.AutoAssign, p.AvoidBuggyIPs, p.Priority,
			p.Ranges, strings.Join(p.Namespaces, ","))
		for _, sel := range p.NamespaceSelectors {
			b.WriteString("|ns:" + sel.String())
		}
		for _, sel := range p.ServiceSelectors {
			b.WriteString("|svc:" + sel.String())
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// poolTarget is the pool controller's view of the backend.
type poolTarget struct{ b *Backend }

var _ pools.Target = poolTarget{}

func (t poolTarget) ApplyPools(ctx context.Context, objects []*v1alpha1.IPAddressPool) (pools.Report, error) {
	return t.b.applyPools(ctx, objects)
}

func (t poolTarget) Serving() bool { return t.b.ready() == nil }
