// Package baremetal is herald's bare-metal backend: it gives each
// LoadBalancer Service addresses from address pools; the node agents
// announce them (ARP/NDP or BGP).
package baremetal

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/ipam"
	"github.com/heraldlb/herald/provider"
	"github.com/heraldlb/herald/provider/service"
)

// Condition type and event reasons users see on their Services.
const (
	ConditionAddressAllocated = "herald.dev/AddressAllocated"
	ReasonAllocationFailed    = "AllocationFailed"
	ReasonIPAllocated         = "IPAllocated"
	ReasonIPReleased          = "IPReleased"
)

// ErrStateNotRecovered is returned while the Services the allocation state
// is rebuilt from are not yet known: allocating before that could hand out
// an address a Service already has.
var ErrStateNotRecovered = fmt.Errorf("%w: address allocations not yet recovered from Service status", provider.ErrNotReady)

// Allocator is the address allocator the backend needs (ipam.Allocator).
type Allocator interface {
	Allocate(req ipam.Request) (ipam.Assignment, error)
	Restore(req ipam.Request, ips []netip.Addr) (ipam.Assignment, error)
	Release(service string) []netip.Addr
	Assigned(service string) (ipam.Assignment, bool)
	SetPools(pools []ipam.Pool) ([]ipam.Conflict, error)
	Usage() []ipam.PoolUsage
	Reserve(ip netip.Addr, holders []ipam.Request) error
	Unreserve(ip netip.Addr)
}

// AllocationError is an allocation that failed for a reason the user can
// fix (pool exhausted, address taken, unknown pool, ...).
type AllocationError struct{ Err error }

func (e *AllocationError) Error() string { return e.Err.Error() }
func (e *AllocationError) Unwrap() error { return e.Err }

// Reason is the event and condition reason for the failure.
func (e *AllocationError) Reason() string { return ReasonAllocationFailed }

// Backend is the bare-metal provider.Backend.
type Backend struct {
	alloc       Allocator
	configPools []ipam.Pool

	mu        sync.Mutex
	env       provider.Env
	pools     *poolController // nil without the IPAddressPool CRD
	poolsSet  bool            // the allocator has the IPAddressPools
	recovered bool
	// claims is nil without a cluster or without the IPAddress API;
	// claimsSynced is nil until the claim informer exists.
	claims        *claimStore
	claimsSynced  func() bool
	claimsDecided bool
}

// maxClaimAttempts bounds how often one Ensure allocates anew after losing
// an address to another instance; each loss reserves that address, so the
// next attempt does not pick it again.
const maxClaimAttempts = 10

var _ provider.Backend = (*Backend)(nil)

// New returns a backend allocating from alloc, which holds configPools
// (the cloud config's); IPAddressPool objects are added to those.
func New(alloc Allocator, configPools []ipam.Pool) *Backend {
	return &Backend{alloc: alloc, configPools: configPools}
}

// Start keeps the cluster handles and starts watching IPAddressPools; state
// is recovered on first use, once Services and pools are known.
func (b *Backend) Start(ctx context.Context, env provider.Env) error {
	b.mu.Lock()
	b.env = env
	b.poolsSet = env.RESTConfig == nil // no cluster to watch pools in: config pools only
	b.claimsDecided = env.RESTConfig == nil || b.claims != nil
	b.mu.Unlock()
	b.updateMetrics()
	if env.RESTConfig != nil {
		go b.watchForPools(ctx, env.RESTConfig)
		if b.claims == nil {
			go b.watchClaims(ctx, env.RESTConfig)
		}
	}
	return nil
}

// setClaims installs the claim store (nil: run without claims).
func (b *Backend) setClaims(store *claimStore, synced func() bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.claims, b.claimsSynced, b.claimsDecided = store, synced, true
}

func (b *Backend) claimStore() *claimStore {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.claims
}

// setPools gives the allocator the config pools plus the valid
// IPAddressPools. Removed pools keep their Services' addresses until those
// Services go; they just give no new ones.
func (b *Backend) setPools(ctx context.Context, objects []*v1alpha1.IPAddressPool) (poolSet, []ipam.Conflict, []ipam.PoolUsage, error) {
	set := desiredPools(b.configPools, objects)
	conflicts, err := b.alloc.SetPools(set.pools)
	if err != nil {
		return poolSet{}, nil, nil, fmt.Errorf("setting address pools: %w", err)
	}
	b.mu.Lock()
	if !b.poolsSet {
		klog.FromContext(ctx).Info("Address pools loaded", "pools", len(set.pools), "invalid", len(set.invalid))
	}
	b.poolsSet = true
	b.mu.Unlock()
	return set, conflicts, b.updateMetrics(), nil
}

// allocationsChanged refreshes usage metrics and pool status.
func (b *Backend) allocationsChanged() {
	b.updateMetrics()
	b.mu.Lock()
	pools := b.pools
	b.mu.Unlock()
	if pools != nil {
		pools.refresh()
	}
}

// ConditionType is herald.dev/AddressAllocated.
func (b *Backend) ConditionType() string { return ConditionAddressAllocated }

// Ensure allocates (or keeps) lb's addresses and claims them in the
// cluster before the caller writes them to the Service's status. An
// address another instance claimed first is reserved and another one
// allocated.
func (b *Backend) Ensure(ctx context.Context, lb *service.LoadBalancer) (*v1.LoadBalancerStatus, error) {
	if err := b.recover(ctx); err != nil {
		return nil, err
	}
	logger := klog.FromContext(ctx)
	req := requestFor(lb)
	req.NamespaceLabels = b.namespaceLabels(lb.Service.Namespace)
	svc := b.currentService(lb.Ref())
	before, had := b.alloc.Assigned(lb.Key())
	b.adopt(ctx, req, lb.UID, svc)
	var assignment ipam.Assignment
	for attempt := 1; ; attempt++ {
		var err error
		assignment, err = b.alloc.Allocate(req)
		if err != nil {
			return nil, &AllocationError{Err: err}
		}
		err = b.claim(ctx, req, lb.UID, assignment.IPs, svc)
		var lost *ClaimedError
		if errors.As(err, &lost) && attempt < maxClaimAttempts {
			logger.V(2).Info("Address already claimed; allocating another", "vip", lost.Addr, "err", lost.Err)
			b.reserve(ctx, lost.Addr, lost.Holders)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("claiming %s: %w", joinAddrs(assignment.IPs), err)
		}
		break
	}
	if !had || !equalAddrs(before.IPs, assignment.IPs) {
		logger.Info("Allocated load balancer addresses", "vip", assignment.IPs, "pool", assignment.Pool)
		b.event(lb.Ref(), v1.EventTypeNormal, ReasonIPAllocated,
			fmt.Sprintf("Assigned %s from pool %s", joinAddrs(assignment.IPs), assignment.Pool))
		b.allocationsChanged()
		if had {
			b.releaseClaims(ctx, lb.Key(), lb.UID, before.IPs, assignment.IPs)
		}
	}
	return statusOf(assignment.IPs), nil
}

// UpdateNodes has nothing to do: which nodes announce a VIP is decided by
// the node agents.
func (b *Backend) UpdateNodes(ctx context.Context, _ *service.LoadBalancer) error {
	return b.recover(ctx)
}

// Get reports the addresses held for ref.
func (b *Backend) Get(ctx context.Context, ref service.Ref) (*v1.LoadBalancerStatus, bool, error) {
	if err := b.recover(ctx); err != nil {
		return nil, false, err
	}
	assignment, ok := b.alloc.Assigned(ref.Key())
	if !ok {
		return nil, false, nil
	}
	return statusOf(assignment.IPs), true, nil
}

// Delete releases ref's addresses and its address claims.
func (b *Backend) Delete(ctx context.Context, ref service.Ref) error {
	if err := b.recover(ctx); err != nil {
		return err
	}
	released := b.alloc.Release(ref.Key())
	if len(released) > 0 {
		klog.FromContext(ctx).Info("Released load balancer addresses", "vip", released)
		b.event(ref, v1.EventTypeNormal, ReasonIPReleased, "Released "+joinAddrs(released))
		b.allocationsChanged()
	}
	if claims := b.claimStore(); claims != nil {
		if err := claims.release(ctx, ref.Key(), string(ref.UID), released, nil); err != nil {
			return fmt.Errorf("releasing address claims: %w", err)
		}
	}
	return nil
}

// namespaceLabels are the labels of the Service's Namespace, for pools'
// namespaceSelectors. They are read at every allocation; a Namespace
// relabelled later does not move Services that already have addresses
// (the allocator does not recheck scope of kept assignments).
func (b *Backend) namespaceLabels(namespace string) map[string]string {
	b.mu.Lock()
	lister := b.env.Namespaces
	b.mu.Unlock()
	if lister == nil {
		return nil
	}
	ns, err := lister.Get(namespace)
	if err != nil {
		return nil
	}
	return ns.Labels
}

func (b *Backend) event(ref service.Ref, eventType, reason, message string) {
	b.mu.Lock()
	recorder := b.env.Recorder
	b.mu.Unlock()
	if recorder == nil {
		return
	}
	recorder.Event(&v1.ObjectReference{Kind: "Service", APIVersion: "v1", Namespace: ref.Service.Namespace,
		Name: ref.Service.Name, UID: ref.UID}, eventType, reason, message)
}

func requestFor(lb *service.LoadBalancer) ipam.Request {
	req := ipam.Request{
		Service:            lb.Key(),
		Namespace:          lb.Service.Namespace,
		ServiceLabels:      lb.Labels,
		RequireAllFamilies: lb.IPFamilyPolicy == v1.IPFamilyPolicyRequireDualStack,
		IPs:                lb.RequestedIPs,
		Pool:               lb.Pool,
		SharingKey:         lb.SharingKey,
		LocalTrafficPolicy: lb.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal,
		BackendKey:         labels.SelectorFromSet(lb.Selector).String(),
	}
	for _, f := range lb.IPFamilies {
		req.Families = append(req.Families, ipam.Family(f))
	}
	for _, p := range lb.Ports {
		req.Ports = append(req.Ports, ipam.Port{Protocol: string(p.Protocol), Port: p.Port})
	}
	return req
}

func statusOf(ips []netip.Addr) *v1.LoadBalancerStatus {
	vip := v1.LoadBalancerIPModeVIP
	status := &v1.LoadBalancerStatus{}
	for _, ip := range ips {
		status.Ingress = append(status.Ingress, v1.LoadBalancerIngress{IP: ip.String(), IPMode: &vip})
	}
	return status
}

func equalAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func joinAddrs(ips []netip.Addr) string {
	parts := make([]string, len(ips))
	for i, ip := range ips {
		parts[i] = ip.String()
	}
	return strings.Join(parts, ", ")
}
