// Package claims makes address allocations atomic across herald-ccm
// instances. Each allocator is in memory, so two instances that briefly
// both run (a rolling update, a lost lease) could give one address to two
// Services. Before a Service's status shows an address, herald claims it
// with a networking.k8s.io/v1 IPAddress named after the address: creating
// an object is atomic, so only one instance wins a free address, and
// joining a shared one is an update with a resourceVersion precondition,
// so two instances cannot both add holders that clash. The loser reserves
// the address in its allocator and allocates again.
//
// The package has three parts: pure decisions on one claim (this file),
// the Store that reads claims from an informer's cache and writes them to
// the API, and the watch that keeps an allocator's reservations in step
// with every claim in the cluster.
//
// kube-apiserver's own IPAddress repair loop leaves these objects alone:
// RepairIPAddress.syncIPAddress returns early unless the
// ipaddress.kubernetes.io/managed-by label is ipallocator.k8s.io
// (k8s.io/kubernetes v1.37.2,
// pkg/registry/core/service/ipallocator/controller/repairip.go,
// managedByController).
package claims

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/bare-metal/ipam"
)

const (
	// Manager is the managed-by label value of herald's claims.
	Manager = "herald.dev"
	// AnnotationHolders lists the Services holding a claimed address
	// (JSON). spec.parentRef is immutable, so it names the Service that
	// first claimed the address; this list is who holds it now.
	AnnotationHolders = "herald.dev/holders"
)

// holder is one Service holding a claimed address, with what the sharing
// rules need, so an instance that never saw the Service can still tell
// whether another may join.
type holder struct {
	Service    string   `json:"service"` // namespace/name
	UID        string   `json:"uid,omitempty"`
	SharingKey string   `json:"sharingKey,omitempty"`
	Ports      []string `json:"ports,omitempty"` // "TCP/80"
	Local      bool     `json:"local,omitempty"`
	Backend    string   `json:"backend,omitempty"`
	// Renewed is when an instance last confirmed the holder. Garbage
	// collection spares holders renewed within the grace period, so a
	// claim whose status write is still in flight is not taken away.
	Renewed time.Time `json:"renewed"`
}

// holderFor describes the Service of req as a claim holder.
func holderFor(req ipam.Request, uid string, now time.Time) holder {
	h := holder{Service: req.Service, UID: uid, SharingKey: req.SharingKey,
		Local: req.LocalTrafficPolicy, Backend: req.BackendKey, Renewed: now.UTC().Truncate(time.Second)}
	for _, p := range req.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = string(v1.ProtocolTCP)
		}
		h.Ports = append(h.Ports, proto+"/"+strconv.Itoa(int(p.Port)))
	}
	return h
}

// request is the holder as a sharing-check request.
func (h holder) request() ipam.Request {
	req := ipam.Request{Service: h.Service, SharingKey: h.SharingKey, LocalTrafficPolicy: h.Local, BackendKey: h.Backend}
	for _, p := range h.Ports {
		proto, port, _ := strings.Cut(p, "/")
		n, err := strconv.ParseInt(port, 10, 32)
		if err != nil {
			continue // written by a newer herald in a form this one ignores
		}
		req.Ports = append(req.Ports, ipam.Port{Protocol: proto, Port: int32(n)})
	}
	return req
}

// sameUse reports whether h and o differ at most in their renewal time.
func (h holder) sameUse(o holder) bool {
	return h.Service == o.Service && h.UID == o.UID && h.SharingKey == o.SharingKey &&
		slices.Equal(h.Ports, o.Ports) && h.Local == o.Local && h.Backend == o.Backend
}

// claim is an IPAddress object as herald reads it.
type claim struct {
	ip      netip.Addr
	ours    bool // managed by herald; otherwise another controller's (a ClusterIP, say)
	parent  string
	holders []holder
}

// ErrNotAClaim marks an IPAddress whose name is not an address.
var ErrNotAClaim = errors.New("not an address claim")

// readClaim decodes an IPAddress. Holders of herald's claims come from the
// annotation; any other IPAddress has its parent as the one holder, which
// shares with no one.
func readClaim(obj *networkingv1.IPAddress) (claim, error) {
	ip, err := netip.ParseAddr(obj.Name)
	if err != nil {
		return claim{}, fmt.Errorf("%w: IPAddress %q: %w", ErrNotAClaim, obj.Name, err)
	}
	c := claim{ip: ip.Unmap(), ours: obj.Labels[networkingv1.LabelManagedBy] == Manager}
	if ref := obj.Spec.ParentRef; ref != nil {
		c.parent = ref.Resource + " " + ref.Namespace + "/" + ref.Name
	}
	if !c.ours {
		c.holders = []holder{{Service: fmt.Sprintf("IPAddress %s (%s, managed by %q)", obj.Name, c.parent, obj.Labels[networkingv1.LabelManagedBy])}}
		return c, nil
	}
	if raw := obj.Annotations[AnnotationHolders]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &c.holders); err != nil {
			return claim{}, fmt.Errorf("IPAddress %s: annotation %s: %w", obj.Name, AnnotationHolders, err)
		}
	}
	return c, nil
}

// reservation is what the allocator must keep in mind for the claim.
func (c claim) reservation() []ipam.Request {
	reqs := make([]ipam.Request, len(c.holders))
	for i, h := range c.holders {
		reqs[i] = h.request()
	}
	return reqs
}

func (c claim) holderIndex(service string) int {
	return slices.IndexFunc(c.holders, func(h holder) bool { return h.Service == service })
}

// heldBy reports whether service (with uid, if given) holds c.
func (c claim) heldBy(service, uid string) bool {
	i := c.holderIndex(service)
	return i >= 0 && (uid == "" || c.holders[i].UID == uid)
}

// ClaimedError means the address is claimed in the cluster by holders the
// Service cannot share it with: another instance won the race for it.
type ClaimedError struct {
	Addr    netip.Addr
	Holders []ipam.Request
	Err     error // the sharing rule broken (*ipam.AddressError)
}

func (e *ClaimedError) Error() string {
	return fmt.Sprintf("address %s is claimed in the cluster: %v", e.Addr, e.Err)
}

func (e *ClaimedError) Unwrap() error { return e.Err }

// newClaim is the IPAddress that claims ip for h alone.
func newClaim(ip netip.Addr, h holder) (*networkingv1.IPAddress, error) {
	namespace, name, _ := strings.Cut(h.Service, "/")
	obj := &networkingv1.IPAddress{
		ObjectMeta: metav1.ObjectMeta{Name: ip.String(), Labels: map[string]string{
			networkingv1.LabelManagedBy:       Manager,
			networkingv1.LabelIPAddressFamily: string(ipam.FamilyOf(ip)),
		}},
		Spec: networkingv1.IPAddressSpec{ParentRef: &networkingv1.ParentReference{
			Resource: "services", Namespace: namespace, Name: name}},
	}
	return withHolders(obj, []holder{h})
}

// withHolders returns a copy of obj listing holders.
func withHolders(obj *networkingv1.IPAddress, holders []holder) (*networkingv1.IPAddress, error) {
	raw, err := json.Marshal(holders)
	if err != nil {
		return nil, err
	}
	next := obj.DeepCopy()
	if next.Annotations == nil {
		next.Annotations = map[string]string{}
	}
	next.Annotations[AnnotationHolders] = string(raw)
	return next, nil
}

// renewAfter is how old a holder's renewal may get before an instance
// claiming the address for a Service that does not show it yet renews it;
// half the grace period leaves the other half for the status write.
func renewAfter(grace time.Duration) time.Duration { return grace / 2 }

// join decides how h holds c: unchanged (nil holders), with an updated
// list, or not at all (*ClaimedError). shown: the Service's status already
// shows the address, so garbage collection spares the holder anyway.
func join(c claim, h holder, shown bool, now time.Time, grace time.Duration) ([]holder, error) {
	i := c.holderIndex(h.Service)
	others := slices.Clone(c.holders)
	if i >= 0 {
		others = slices.Delete(others, i, i+1)
	}
	if i < 0 || !c.holders[i].sameUse(h) {
		reqs := make([]ipam.Request, len(others))
		for j, o := range others {
			reqs[j] = o.request()
		}
		if err := ipam.CanShare(c.ip, h.request(), reqs); err != nil {
			return nil, &ClaimedError{Addr: c.ip, Holders: c.reservation(), Err: err}
		}
	}
	if i >= 0 && c.holders[i].sameUse(h) && (shown || now.Sub(c.holders[i].Renewed) < renewAfter(grace)) {
		return nil, nil
	}
	next := slices.Clone(c.holders)
	if i >= 0 {
		next[i] = h
	} else {
		next = append(next, h)
	}
	return next, nil
}

// leave returns c's holders without service, and whether it was one. With
// a uid, a holder of that name with another UID stays: it is a Service
// re-created under the same name, whose claim the old one must not take.
func leave(c claim, service, uid string) ([]holder, bool) {
	i := c.holderIndex(service)
	if i < 0 || uid != "" && c.holders[i].UID != "" && c.holders[i].UID != uid {
		return nil, false
	}
	return slices.Delete(slices.Clone(c.holders), i, i+1), true
}

// ServiceView is what garbage collection needs to know of a Service.
type ServiceView struct {
	UID   string
	Shows []netip.Addr // status.loadBalancer.ingress
}

// Lookup finds the Service called namespace/name in the informer's cache.
type Lookup func(service string) (ServiceView, bool)

// staleHolders returns the holders of c to drop: renewed longer than grace
// ago and not backed by their Service (gone, replaced by one of the same
// name, or no longer showing the address). The grace period covers an
// allocation of another instance whose status write has not landed yet,
// and informers that lag behind.
func staleHolders(c claim, lookup Lookup, now time.Time, grace time.Duration) []string {
	var stale []string
	for _, h := range c.holders {
		if now.Sub(h.Renewed) <= grace {
			continue
		}
		view, ok := lookup(h.Service)
		if ok && (h.UID == "" || view.UID == h.UID) && slices.Contains(view.Shows, c.ip) {
			continue
		}
		stale = append(stale, h.Service)
	}
	return stale
}
