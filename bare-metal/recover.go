package baremetal

import (
	"context"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/ipam"
	"github.com/heraldlb/herald/provider/service"
)

// recover rebuilds the allocations from the addresses Services already show
// in status.loadBalancer.ingress, once, before the first allocation. The
// Service status is the durable record: a restarted CCM gives every Service
// the address it has, so nothing on the network changes.
func (b *Backend) recover(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.recovered {
		return nil
	}
	if !b.poolsSet || b.env.Services == nil || b.env.ServicesSynced == nil || !b.env.ServicesSynced() {
		return ErrStateNotRecovered
	}
	// Pools may select Namespaces by label: allocating before their
	// labels are known would pick the wrong pool.
	if b.env.NamespacesSynced != nil && !b.env.NamespacesSynced() {
		return ErrStateNotRecovered
	}
	// Other instances' claims must be reserved before anything is restored
	// or allocated.
	if !b.claimsDecided || b.claimsSynced != nil && !b.claimsSynced() {
		return ErrStateNotRecovered
	}
	services, err := b.env.Services.List(labels.Everything())
	if err != nil {
		return err
	}
	// Oldest first: if two Services claim one address, the one that had
	// it first keeps it and the other is given a new one.
	slices.SortFunc(services, func(x, y *v1.Service) int {
		if c := x.CreationTimestamp.Compare(y.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(x.Namespace+"/"+x.Name, y.Namespace+"/"+y.Name)
	})
	logger := klog.FromContext(ctx)
	restored := 0
	for _, svc := range services {
		ips := ingressAddrs(svc)
		if len(ips) == 0 || !b.env.Selection.Wants(svc) || svc.DeletionTimestamp != nil && len(svc.Finalizers) == 0 {
			continue
		}
		if _, err := b.alloc.Restore(restoreRequest(svc), ips); err != nil {
			logger.Info("Not restoring the addresses of a Service; it will be allocated anew",
				"service", klog.KObj(svc), "vip", ips, "err", err)
			continue
		}
		restored++
	}
	logger.Info("Recovered address allocations from Service status", "services", restored)
	b.recovered = true
	b.updateMetrics()
	if b.pools != nil {
		b.pools.refresh()
	}
	return nil
}

// restoreRequest carries what sharing checks need. A Service whose
// annotations no longer parse still keeps its addresses; its next Ensure
// reports the annotation error.
func restoreRequest(svc *v1.Service) ipam.Request {
	if lb, err := service.Build(svc, nil); err == nil {
		return requestFor(lb)
	}
	return ipam.Request{Service: svc.Namespace + "/" + svc.Name, Namespace: svc.Namespace}
}

func ingressAddrs(svc *v1.Service) []netip.Addr {
	var ips []netip.Addr
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if ip, err := netip.ParseAddr(in.IP); err == nil {
			ips = append(ips, ip.Unmap())
		}
	}
	return ips
}
