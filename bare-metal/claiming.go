package baremetal

import (
	"context"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/claims"
	"github.com/heraldlb/herald/bare-metal/ipam"
)

// adopt makes this instance follow the addresses another instance gave
// the Service: those its status shows, when claimed for it, else those
// claimed for it (the other's status write has not landed yet). Both
// instances run every allocation; without this they would keep different
// views, each claim an address for the Service, and move it back and forth.
func (b *Backend) adopt(ctx context.Context, req ipam.Request, uid types.UID, svc *v1.Service) {
	if b.claims == nil {
		return
	}
	var want []netip.Addr
	if svc != nil {
		want = ingressAddrs(svc)
	}
	for _, ip := range want {
		if !b.claims.Holds(ip, req.Service, string(uid)) {
			want = nil
			break
		}
	}
	if len(want) == 0 {
		want = onePerFamily(b.claims.HeldBy(req.Service, string(uid)), req.Families)
	}
	cur, had := b.alloc.Assigned(req.Service)
	if len(want) == 0 || had && slices.Equal(cur.IPs, want) {
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
	if b.claims == nil {
		return nil
	}
	var shown []netip.Addr
	if svc != nil {
		shown = ingressAddrs(svc)
	}
	return b.claims.Claim(ctx, req, string(uid), ips, func(ip netip.Addr) bool { return slices.Contains(shown, ip) })
}

// released gives up the claims of addresses the Service moved away from;
// without claims, the Services waiting for an address may have one now. A
// failure only delays the release: garbage collection retries it.
func (b *Backend) released(ctx context.Context, key string, uid types.UID, old, keep []netip.Addr) {
	if b.claims == nil {
		b.env.Requeue.RequeuePending()
		return
	}
	// This instance may have moved the Service from a stale view: another
	// instance may have just shown the old address in its status, or this
	// one followed an older status of the other's. Never give up a claim
	// the Service's live status shows.
	if b.services != nil {
		namespace, name, _ := strings.Cut(key, "/")
		live, err := b.services.Services(namespace).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			klog.FromContext(ctx).V(2).Info("Not releasing address claims now; garbage collection will", "vip", old, "err", err)
			return
		case live.UID == uid:
			keep = append(slices.Clone(keep), ingressAddrs(live)...)
		}
	}
	if err := b.claims.Release(ctx, key, string(uid), old, keep); err != nil {
		klog.FromContext(ctx).Error(err, "Releasing address claims failed; garbage collection will", "vip", old)
	}
}

// reserve records holders of ip in the allocator; none means free, and
// then the Services waiting for an address may have one.
func (b *Backend) reserve(ctx context.Context, ip netip.Addr, holders []ipam.Request) {
	if len(holders) == 0 {
		if b.alloc.Unreserve(ip) && b.ready() == nil {
			b.env.Requeue.RequeuePending()
		}
		return
	}
	if err := b.alloc.Reserve(ip, holders); err != nil {
		klog.FromContext(ctx).Error(err, "Ignoring a malformed address claim", "vip", ip)
	}
}

// reservations is the claim watch's view of the backend: every claim in
// the cluster is reserved in the allocator.
type reservations struct{ b *Backend }

var _ claims.Reservations = reservations{}

func (r reservations) Reserve(ctx context.Context, ip netip.Addr, holders []ipam.Request) {
	r.b.reserve(ctx, ip, holders)
}

// viewOf is what claim garbage collection needs of a Service.
func (b *Backend) viewOf(key string) (claims.ServiceView, bool) {
	namespace, name, _ := strings.Cut(key, "/")
	svc, err := b.env.Services.Services(namespace).Get(name)
	if err != nil {
		return claims.ServiceView{}, false
	}
	return claims.ServiceView{UID: string(svc.UID), Shows: ingressAddrs(svc)}, true
}
