package baremetal

import (
	"context"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/ipam"
	"github.com/heraldlb/herald/provider/service"
)

// currentService is the Service of ref as the informer has it, nil when
// it is unknown or another object of the same name.
func (b *Backend) currentService(ref service.Ref) *v1.Service {
	b.mu.Lock()
	lister := b.env.Services
	b.mu.Unlock()
	if lister == nil {
		return nil
	}
	svc, err := lister.Services(ref.Service.Namespace).Get(ref.Service.Name)
	if err != nil || (ref.UID != "" && svc.UID != ref.UID) {
		return nil
	}
	return svc
}

// adopt makes this instance follow the addresses another instance gave
// the Service: those its status shows, when claimed for it, else those
// claimed for it (the other's status write has not landed yet). Both
// instances run every allocation; without this they would keep different
// views, each claim an address for the Service, and move it back and forth.
func (b *Backend) adopt(ctx context.Context, req ipam.Request, uid types.UID, svc *v1.Service) {
	claims := b.claimStore()
	if claims == nil {
		return
	}
	var want []netip.Addr
	if svc != nil {
		want = ingressAddrs(svc)
	}
	for _, ip := range want {
		if !claims.holds(ip, req.Service, string(uid)) {
			want = nil
			break
		}
	}
	if len(want) == 0 {
		want = onePerFamily(claims.heldBy(req.Service, string(uid)), req.Families)
	}
	cur, had := b.alloc.Assigned(req.Service)
	if len(want) == 0 || had && equalAddrs(cur.IPs, want) {
		return
	}
	if _, err := b.alloc.Restore(req, want); err != nil {
		klog.FromContext(ctx).V(2).Info("Not adopting the addresses claimed for the Service", "vip", want, "err", err)
		return
	}
	klog.FromContext(ctx).V(2).Info("Adopted the addresses claimed for the Service", "vip", want, "had", cur.IPs)
}

// onePerFamily orders ips by families, or returns nil when that is
// ambiguous: two claims of one family mean a lost race whose loser is not
// known yet, and garbage collection will tell.
func onePerFamily(ips []netip.Addr, families []ipam.Family) []netip.Addr {
	var out []netip.Addr
	for _, f := range families {
		var found []netip.Addr
		for _, ip := range ips {
			if ipam.FamilyOf(ip) == f {
				found = append(found, ip)
			}
		}
		if len(found) > 1 {
			return nil
		}
		out = append(out, found...)
	}
	if len(out) != len(ips) {
		return nil
	}
	return out
}

// claim claims ips for the Service of req, when claims are in use.
func (b *Backend) claim(ctx context.Context, req ipam.Request, uid types.UID, ips []netip.Addr, svc *v1.Service) error {
	claims := b.claimStore()
	if claims == nil {
		return nil
	}
	var shown []netip.Addr
	if svc != nil {
		shown = ingressAddrs(svc)
	}
	h := holderFor(req, string(uid), claims.now())
	return claims.claim(ctx, h, ips, func(ip netip.Addr) bool { return slices.Contains(shown, ip) })
}

// releaseClaims gives up the claims of addresses the Service moved away
// from. A failure only delays the release: garbage collection retries it.
func (b *Backend) releaseClaims(ctx context.Context, key string, uid types.UID, old, keep []netip.Addr) {
	claims := b.claimStore()
	if claims == nil {
		return
	}
	if err := claims.release(ctx, key, string(uid), old, keep); err != nil {
		klog.FromContext(ctx).Error(err, "Releasing address claims failed; garbage collection will", "vip", old)
	}
}

func (b *Backend) servicesSynced() bool {
	b.mu.Lock()
	synced := b.env.ServicesSynced
	b.mu.Unlock()
	return synced != nil && synced()
}

// serviceView is what claim garbage collection needs of a Service.
func (b *Backend) viewOf(key string) (serviceView, bool) {
	b.mu.Lock()
	lister := b.env.Services
	b.mu.Unlock()
	namespace, name, _ := strings.Cut(key, "/")
	svc, err := lister.Services(namespace).Get(name)
	if err != nil {
		return serviceView{}, false
	}
	return serviceView{uid: string(svc.UID), shows: ingressAddrs(svc)}, true
}
