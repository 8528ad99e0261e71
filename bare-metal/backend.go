// Package baremetal is herald's bare-metal backend: it gives each
// LoadBalancer Service addresses from address pools (the cloud config's and
// IPAddressPool objects) and claims them cluster-wide, so that two
// herald-ccm instances never hand one out twice; herald-agent forwards
// traffic for them on every node. Announcing the addresses to the network
// (ARP/NDP or BGP from chosen nodes) is not built yet: until it is, the
// network must bring the pools' traffic to the nodes by other means
// (static routes, say).
package baremetal

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/claims"
	"github.com/heraldlb/herald/bare-metal/ipam"
	"github.com/heraldlb/herald/bare-metal/pools"
	"github.com/heraldlb/herald/provider"
	"github.com/heraldlb/herald/provider/service"
)

// Condition type and event reasons users see on their Services.
const (
	ConditionAddressAllocated = "herald.dev/AddressAllocated"
	ReasonAllocationFailed    = "AllocationFailed"
	ReasonIPAllocated         = "IPAllocated"
	ReasonIPReleased          = "IPReleased"
	// ReasonAddressOutsidePools: the Service keeps an address no pool
	// holds any more (its pool was deleted or shrunk).
	ReasonAddressOutsidePools = "AddressOutsidePools"
)

// claimer records in the cluster which Service holds which address
// (claims.Store); the backend runs without one when the cluster has no
// IPAddress API.
type claimer interface {
	// Holds reports whether the claim of ip lists service (with uid).
	Holds(ip netip.Addr, service, uid string) bool
	// HeldBy lists the addresses claimed for service (with uid).
	HeldBy(service, uid string) []netip.Addr
	// Claim claims ips for the Service of req, or returns a
	// *claims.ClaimedError for an address it may not have.
	Claim(ctx context.Context, req ipam.Request, uid string, ips []netip.Addr, shown func(netip.Addr) bool) error
	// Release gives up the Service's claims of ips and any other address
	// but those of keep.
	Release(ctx context.Context, service, uid string, ips, keep []netip.Addr) error
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
	alloc       *ipam.Allocator
	configPools []ipam.Pool
	metrics     *metrics

	// env is set by Start, before anything else runs.
	env provider.Env
	// phase is how far start-up has come (startup.go). claims and
	// claimsSynced are set before it reaches phaseServing and only read
	// once it has; claims stays nil without the IPAddress API.
	phase        atomic.Int32
	claims       claimer
	claimsSynced cache.InformerSynced
	// services reads Services from the apiserver, past the cache; nil
	// without a cluster.
	services corev1client.ServicesGetter
	// pools is the IPAddressPool controller, nil until the CRD is served.
	pools atomic.Pointer[pools.Controller]
	// poolsApplied identifies the pools last given to the allocator.
	poolsMu      sync.Mutex
	poolsApplied string
}

// maxClaimAttempts bounds how often one Ensure allocates anew after losing
// an address to another instance; each loss reserves that address, so the
// next attempt does not pick it again.
const maxClaimAttempts = 10

var _ provider.Backend = (*Backend)(nil)

// New returns a backend allocating from configPools (the cloud config's,
// validated); IPAddressPool objects are added to those. Its metrics are
// registered on reg.
func New(configPools []ipam.Pool, reg prometheus.Registerer) (*Backend, error) {
	alloc, err := ipam.New(configPools)
	if err != nil {
		return nil, fmt.Errorf("address pools: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Backend{alloc: alloc, configPools: configPools, metrics: m}, nil
}

// Start keeps the cluster handles and starts up in the background: the
// backend serves once it knows the pools, the claims and the Services
// (startup.go).
func (b *Backend) Start(ctx context.Context, env provider.Env) error {
	b.env = env
	b.updateMetrics()
	go b.startUp(ctx)
	return nil
}

// allocationsChanged refreshes usage metrics and pool status.
func (b *Backend) allocationsChanged() {
	b.updateMetrics()
	if c := b.pools.Load(); c != nil {
		c.Refresh()
	}
}

func (b *Backend) updateMetrics() []ipam.PoolUsage {
	usage := b.alloc.Usage()
	b.metrics.publish(usage, b.alloc.Outside())
	return usage
}

// ConditionType is herald.dev/AddressAllocated.
func (b *Backend) ConditionType() string { return ConditionAddressAllocated }

// AnnotationKeys are the annotations Ensure's Results set.
func (b *Backend) AnnotationKeys() []string { return []string{v1alpha1.AnnotationAllocatedFromPool} }

// Ensure allocates (or keeps) lb's addresses and claims them in the
// cluster before the caller writes them to the Service's status. An
// address another instance claimed first is reserved and another one
// allocated.
func (b *Backend) Ensure(ctx context.Context, lb *service.LoadBalancer) (*provider.Result, error) {
	if err := b.ready(); err != nil {
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
		var lost *claims.ClaimedError
		if errors.As(err, &lost) && attempt < maxClaimAttempts {
			logger.V(2).Info("Address already claimed; allocating another", "vip", lost.Addr, "err", lost.Err)
			b.metrics.claimsLost.Inc()
			b.reserve(ctx, lost.Addr, lost.Holders)
			continue
		}
		if err != nil {
			return nil, err // the store's errors name the address: "claiming 192.0.2.1: ..."
		}
		break
	}
	if !had || !slices.Equal(before.IPs, assignment.IPs) {
		logger.Info("Allocated load balancer addresses", "vip", assignment.IPs, "pool", assignment.Pool)
		b.event(lb.Ref(), v1.EventTypeNormal, ReasonIPAllocated,
			fmt.Sprintf("Assigned %s from pool %s", joinAddrs(assignment.IPs), assignment.Pool))
		b.allocationsChanged()
		if had {
			b.released(ctx, lb.Key(), lb.UID, before.IPs, assignment.IPs)
		}
	}
	return &provider.Result{
		Status:      statusOf(assignment.IPs),
		Annotations: map[string]string{v1alpha1.AnnotationAllocatedFromPool: assignment.Pool},
		Warning:     outsideWarning(assignment),
	}, nil
}

// outsideWarning reports addresses no pool holds any more. The Service
// keeps them: an address in status survives pool edits and restarts
// unless the Service asks for another (README, "Address lifecycle").
func outsideWarning(a ipam.Assignment) *provider.Warning {
	if len(a.Outside) == 0 {
		return nil
	}
	return &provider.Warning{Reason: ReasonAddressOutsidePools, Message: fmt.Sprintf(
		"%s is in no address pool any more (it came from pool %s, since deleted or shrunk); "+
			"the Service keeps it until it is deleted or asks for another address", joinAddrs(a.Outside), poolName(a.Pool))}
}

func poolName(pool string) string {
	if pool == "" {
		return "unknown"
	}
	return pool
}

// UpdateNodes has nothing to do: which nodes announce a VIP is decided by
// the node agents.
func (b *Backend) UpdateNodes(context.Context, *service.LoadBalancer) error {
	return b.ready()
}

// Delete releases ref's addresses and its address claims.
func (b *Backend) Delete(ctx context.Context, ref service.Ref) error {
	if err := b.ready(); err != nil {
		return err
	}
	released := b.alloc.Release(ref.Key())
	if len(released) > 0 {
		klog.FromContext(ctx).Info("Released load balancer addresses", "vip", released)
		b.event(ref, v1.EventTypeNormal, ReasonIPReleased, "Released "+joinAddrs(released))
		b.allocationsChanged()
	}
	if b.claims == nil {
		if len(released) > 0 {
			b.env.Requeue.RequeuePending()
		}
		return nil
	}
	// The claim watch requeues the waiting Services when the claims go.
	if err := b.claims.Release(ctx, ref.Key(), string(ref.UID), released, nil); err != nil {
		return fmt.Errorf("releasing address claims: %w", err)
	}
	return nil
}

// namespaceLabels are the labels of the Service's Namespace, for pools'
// namespaceSelectors. They are read at every allocation; a Namespace
// relabelled later does not move Services that already have addresses
// (the allocator does not recheck scope of kept assignments).
func (b *Backend) namespaceLabels(namespace string) map[string]string {
	if b.env.Namespaces == nil {
		return nil
	}
	ns, err := b.env.Namespaces.Get(namespace)
	if err != nil {
		return nil
	}
	return ns.Labels
}

// currentService is the Service of ref as the informer has it, nil when
// it is unknown or another object of the same name.
func (b *Backend) currentService(ref service.Ref) *v1.Service {
	if b.env.Services == nil {
		return nil
	}
	svc, err := b.env.Services.Services(ref.Service.Namespace).Get(ref.Service.Name)
	if err != nil || (ref.UID != "" && svc.UID != ref.UID) {
		return nil
	}
	return svc
}

func (b *Backend) event(ref service.Ref, eventType, reason, message string) {
	if b.env.Recorder == nil {
		return
	}
	b.env.Recorder.Event(&v1.ObjectReference{Kind: "Service", APIVersion: "v1", Namespace: ref.Service.Namespace,
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

func joinAddrs(ips []netip.Addr) string {
	parts := make([]string, len(ips))
	for i, ip := range ips {
		parts[i] = ip.String()
	}
	return strings.Join(parts, ", ")
}
