package agent

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/provider/dataplane"
	"github.com/heraldlb/herald/provider/service"
)

// sync builds the ruleset and applies it: partial when the applier can,
// full after a failure (the applier forgets what it applied) and every
// FullSyncPeriod. It rebuilds only the Services the informers reported
// changed, except at the first sync, after the node or Options changed,
// and at a full sync, which rebuilds from every cached object as a guard
// against a change ever missed. It runs only on the Runner's goroutine.
func (a *Agent) sync(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	// The duration covers building too: at scale it is a good part of a sync.
	start := a.clock.Now()
	node := a.node(ctx)
	changed, triggers := a.changes.take()
	forceFull := a.lastFull.IsZero() || start.Sub(a.lastFull) >= a.cfg.FullSyncPeriod
	ruleset, err := a.build(node, a.localDetector(ctx), changed, forceFull)
	if err != nil {
		a.changes.putBack(changed, triggers)
		return err
	}
	var res dataplane.SyncResult
	if forceFull {
		res, err = a.applier.SyncFull(ctx, ruleset)
	} else {
		res, err = a.applier.Sync(ctx, ruleset)
	}
	now := a.clock.Now()
	a.metrics.syncDuration.WithLabelValues(syncMode(res)).Observe(now.Sub(start).Seconds())
	if a.onSync != nil {
		defer func() { a.onSync(syncReport{result: res, err: err}) }()
	}
	services := a.builder.Services()
	if err != nil {
		a.changes.putBack(nil, triggers)
		a.metrics.syncErrors.Inc()
		logger.Error(err, "Dataplane sync failed; the next one is full", "services", services)
		return fmt.Errorf("sync dataplane: %w", err)
	}
	if res.Full {
		a.lastFull = now
	}
	a.metrics.synced(ruleset, res, now)
	a.metrics.programmed(triggers, now)
	if res.Full && !a.health.isReady() {
		logger.Info("First full sync done; the node forwards service traffic", "services", services,
			"operations", res.Operations, "elapsed", now.Sub(start))
	}
	a.health.synced(res.Full)
	a.deleteStaleFlows(ctx, ruleset)
	logger.V(2).Info("Dataplane synced", "mode", syncMode(res), "operations", res.Operations,
		"services", services, "changed", len(changed), "elapsed", now.Sub(start))

	// Health check servers follow a successful sync only, so that they never
	// announce endpoints the kernel does not forward to yet. A port that
	// fails to open does not fail the sync: the next one retries it.
	if err := a.hc.sync(ctx, a.builder.HealthChecks(), healthCheckHosts(node, a.cfg.Dataplane.NodePortCIDRs)); err != nil {
		logger.Error(err, "Some health check node ports are not served")
	}
	return nil
}

// build returns the desired ruleset: from the changed Services alone when
// the Builder can take them in, else from every cached object.
func (a *Agent) build(node dataplane.Node, local dataplane.LocalDetector, changed []types.NamespacedName, all bool) (*dataplane.Ruleset, error) {
	opts := a.cfg.Dataplane
	opts.ServiceCIDRs = a.serviceCIDRs()
	opts.Local = local
	if !all && a.builder.Primed(node, opts) {
		return a.builder.Update(changed, a.source), nil
	}
	svcs, eps := a.source.all()
	return a.builder.Build(svcs, eps, node, opts), nil
}

// deleteStaleFlows deletes the UDP conntrack entries that the ruleset just
// applied made wrong. It runs after the rules are in the kernel, so that the
// next datagram of a deleted flow is NATed by the new rules. A failure does
// not fail the sync: the entries time out eventually.
func (a *Agent) deleteStaleFlows(ctx context.Context, applied *dataplane.Ruleset) {
	prev := a.lastApplied
	a.lastApplied = applied
	if a.conntrack == nil {
		return
	}
	flows := dataplane.StaleUDPFlows(prev, applied)
	if len(flows) == 0 {
		return
	}
	if err := a.conntrack.DeleteUDP(ctx, flows); err != nil {
		klog.FromContext(ctx).Error(err, "Some stale UDP conntrack entries were not deleted", "flows", len(flows))
		return
	}
	klog.FromContext(ctx).V(2).Info("Deleted stale UDP conntrack entries", "flows", len(flows))
}

// node returns what the dataplane needs to know about this node. Without the
// Node object (a wrong --node-name, or a deleted Node) ClusterIPs still work;
// NodePorts need the node's addresses.
func (a *Agent) node(ctx context.Context) dataplane.Node {
	n, err := a.nodes.Get(a.cfg.NodeName)
	if err != nil {
		if apierrors.IsNotFound(err) {
			klog.FromContext(ctx).Error(err, "Node not found; NodePorts are not served until it exists")
		}
		return dataplane.Node{Name: a.cfg.NodeName}
	}
	// The Node object, not the host's interfaces, is the source, so that
	// the agent needs no netlink access for this and tests need no network.
	return dataplane.Node{Name: n.Name, IPs: service.NodeAddresses(n), Zone: n.Labels[v1.LabelTopologyZone]}
}

// healthCheckHosts are the addresses healthCheckNodePorts listen on: every
// address, or, as for NodePorts, only the node's addresses inside the
// --nodeport-addresses CIDRs.
func healthCheckHosts(node dataplane.Node, cidrs []netip.Prefix) []string {
	if len(cidrs) == 0 {
		return []string{""}
	}
	var out []string
	for _, ip := range node.IPs {
		for _, c := range cidrs {
			if c.Contains(ip) {
				out = append(out, ip.String())
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// serviceCIDRs are the ranges of the cluster's ServiceCIDR objects, sorted
// (a different order is no change).
func (a *Agent) serviceCIDRs() []netip.Prefix {
	if a.cidrs == nil {
		return nil
	}
	objs, err := a.cidrs.List(labels.Everything())
	if err != nil {
		return nil // a lister over a cache does not fail
	}
	var out []netip.Prefix
	for _, o := range objs {
		for _, c := range o.Spec.CIDRs {
			if p, err := netip.ParsePrefix(c); err == nil { // the apiserver validates them
				out = append(out, p.Masked())
			}
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	return slices.Compact(out)
}
