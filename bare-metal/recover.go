package baremetal

import (
	"context"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/ipam"
	"github.com/heraldlb/herald/provider/service"
)

// recover rebuilds the allocations from the addresses Services already show
// in status.loadBalancer.ingress, once, before the first allocation. The
// Service status is the durable record: a restarted CCM gives every Service
// the address it has, so nothing on the network changes. Start-up calls it
// once Services, Namespaces, pools and claims are listed.
func (b *Backend) recover(ctx context.Context) {
	logger := klog.FromContext(ctx)
	services, err := b.env.Services.List(labels.Everything())
	if err != nil {
		logger.Error(err, "Listing Services from the informer failed")
	}
	// Oldest first: if two Services claim one address, the one that had
	// it first keeps it and the other is given a new one.
	slices.SortFunc(services, func(x, y *v1.Service) int {
		if c := x.CreationTimestamp.Compare(y.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(x.Namespace+"/"+x.Name, y.Namespace+"/"+y.Name)
	})
	restored := 0
	for _, svc := range services {
		ips := ingressAddrs(svc)
		if len(ips) == 0 || !b.env.Selection.Wants(svc) || svc.DeletionTimestamp != nil && len(svc.Finalizers) == 0 {
			continue
		}
		if _, err := b.alloc.Restore(restoreRequest(svc), ips); err != nil {
			// Two Services showing one address: the older keeps it.
			logger.Info("Not restoring the addresses of a Service: another holds them; it will be allocated anew",
				"service", klog.KObj(svc), "vip", ips, "err", err)
			continue
		}
		restored++
	}
	logger.Info("Recovered address allocations from Service status", "services", restored)
}

// restoreRequest carries what sharing checks need, and the pool the
// Service recorded, which names addresses no pool holds any more. A
// Service whose annotations no longer parse still keeps its addresses; its
// next Ensure reports the annotation error.
func restoreRequest(svc *v1.Service) ipam.Request {
	req := ipam.Request{Service: svc.Namespace + "/" + svc.Name, Namespace: svc.Namespace}
	if lb, err := service.Build(svc, nil); err == nil {
		req = requestFor(lb)
	}
	if recorded, ok := svc.Annotations[v1alpha1.AnnotationAllocatedFromPool]; ok {
		req.Pool = recorded
	}
	return req
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
