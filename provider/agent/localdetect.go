package agent

import (
	"context"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/provider/dataplane"
)

// ReasonNoPodCIDRs is the reason of the Warning Event recorded on the Node
// when local traffic is to be told by the Node's pod ranges and it has none.
const ReasonNoPodCIDRs = "NoPodCIDRs"

// localDetector is the detector for this sync. In mode NodeCIDR its ranges
// are the Node's spec.podCIDRs, read at every sync: a Node may get them
// after the agent started (the node IPAM controller assigns them), and the
// Builder sees the change as new Options and rebuilds. kube-proxy waits for
// them at start and restarts when they change; forwarding in the meantime
// serves the node better, with nothing taken for local, as kube-proxy does
// for a family without ranges.
func (a *Agent) localDetector(ctx context.Context) dataplane.LocalDetector {
	d := a.cfg.Dataplane.Local
	if !a.cfg.LocalFromNode {
		return d
	}
	n, err := a.nodes.Get(a.cfg.NodeName)
	if err != nil {
		n = nil // node() has logged it; nothing to read ranges from
	}
	d.PodCIDRs = nodePodCIDRs(n)
	a.reportNodePodCIDRs(ctx, n, d.PodCIDRs)
	return d
}

// nodePodCIDRs are a Node's pod ranges: spec.podCIDRs, or the older
// single spec.podCIDR that some clusters still fill alone.
func nodePodCIDRs(n *v1.Node) []netip.Prefix {
	if n == nil {
		return nil
	}
	in := n.Spec.PodCIDRs
	if len(in) == 0 && n.Spec.PodCIDR != "" {
		in = []string{n.Spec.PodCIDR}
	}
	var out []netip.Prefix
	for _, s := range in {
		if p, err := netip.ParsePrefix(s); err == nil { // the apiserver validates them
			out = append(out, p.Masked())
		}
	}
	return out
}

// reportNodePodCIDRs says, once per change, which ranges tell local
// traffic, and warns (log and an Event on the Node) when there are none.
func (a *Agent) reportNodePodCIDRs(ctx context.Context, n *v1.Node, cidrs []netip.Prefix) {
	if a.reportedPodCIDRs != nil && slices.Equal(*a.reportedPodCIDRs, cidrs) {
		return
	}
	a.reportedPodCIDRs = &cidrs
	logger := klog.FromContext(ctx)
	if len(cidrs) > 0 {
		logger.Info("Telling local traffic by the Node's pod ranges", "podCIDRs", cidrs)
		return
	}
	const msg = "--detect-local-mode=NodeCIDR, but the Node has no spec.podCIDRs: no traffic is taken for pods' " +
		"(ClusterIP traffic is not masqueraded, pods get no exception to externalTrafficPolicy Local) until it has some"
	logger.Error(nil, msg)
	if a.recorder != nil && n != nil {
		a.recorder.Event(n, v1.EventTypeWarning, ReasonNoPodCIDRs, msg)
	}
}
