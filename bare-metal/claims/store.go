package claims

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/ipam"
)

// Claim timing. The grace period must outlast the time from a claim to
// the status write that shows the address (milliseconds normally, longer
// when the apiserver is slow) plus informer lag; it is also how long a
// claim leaked by a crash or a lost race keeps its address from others.
const (
	Grace           = time.Minute
	collectInterval = 30 * time.Second
	// claimRetries bounds the re-reads when writes keep hitting
	// resourceVersion conflicts; the caller's sync is retried anyway.
	claimRetries = 5
)

// fieldManager owns what herald writes on claims: herald-ccm, as on
// Services.
const fieldManager = "herald-ccm"

// errClaimContended is returned when a claim kept changing under us.
var errClaimContended = errors.New("address claim kept changing; retrying later")

// API is the part of the IPAddress client claims use; the typed client
// satisfies it, unit tests use claimstest.APIServer.
type API interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*networkingv1.IPAddress, error)
	Create(ctx context.Context, obj *networkingv1.IPAddress, opts metav1.CreateOptions) (*networkingv1.IPAddress, error)
	Update(ctx context.Context, obj *networkingv1.IPAddress, opts metav1.UpdateOptions) (*networkingv1.IPAddress, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

// Cache is what the IPAddress informer knows of herald's claims.
type Cache interface {
	Get(name string) (*networkingv1.IPAddress, bool)
	ByHolder(service string) []*networkingv1.IPAddress
	List() []*networkingv1.IPAddress
}

// Store reads claims from the cache and writes them to the API: a write
// that finds the cache stale re-reads the object and decides again.
type Store struct {
	api   API
	cache Cache
	now   func() time.Time
	grace time.Duration
}

// NewStore returns a store over api and cache; holders are renewed by now
// and collected grace after their last renewal.
func NewStore(api API, cache Cache, now func() time.Time, grace time.Duration) *Store {
	return &Store{api: api, cache: cache, now: now, grace: grace}
}

// Holds reports whether the cached claim of ip lists service (with uid).
func (s *Store) Holds(ip netip.Addr, service, uid string) bool {
	obj, ok := s.cache.Get(ip.String())
	if !ok {
		return false
	}
	c, err := readClaim(obj)
	return err == nil && c.ours && c.heldBy(service, uid)
}

// HeldBy returns the addresses whose cached claims list service (with
// uid), in address order.
func (s *Store) HeldBy(service, uid string) []netip.Addr {
	var ips []netip.Addr
	for _, obj := range s.cache.ByHolder(service) {
		c, err := readClaim(obj)
		if err == nil && c.ours && c.heldBy(service, uid) {
			ips = append(ips, c.ip)
		}
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	return ips
}

// Claim makes the Service of req (with uid) a holder of every address in
// ips, or returns a *ClaimedError for the first address it may not hold.
// shown reports whether the Service's status already shows an address.
// Holding already, per the cache, costs no write.
func (s *Store) Claim(ctx context.Context, req ipam.Request, uid string, ips []netip.Addr, shown func(netip.Addr) bool) error {
	h := holderFor(req, uid, s.now())
	for _, ip := range ips {
		if err := s.claimOne(ctx, h, ip, shown(ip)); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) claimOne(ctx context.Context, h holder, ip netip.Addr, shown bool) error {
	name := ip.String()
	obj, _ := s.cache.Get(name)
	for range claimRetries {
		var err error
		if obj == nil {
			obj, err = s.create(ctx, ip, h)
			if apierrors.IsNotFound(err) {
				continue // released between our create and our read
			}
			if err != nil || obj == nil {
				return err // nil, nil: created
			}
		}
		c, err := readClaim(obj)
		if err != nil {
			return err
		}
		holders, err := join(c, h, shown, s.now(), s.grace)
		if err != nil || holders == nil {
			return err
		}
		if _, err = s.write(ctx, obj, holders); err == nil {
			klog.FromContext(ctx).V(2).Info("Joined address claim", "vip", ip, "holders", len(holders))
			return nil
		}
		if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			return fmt.Errorf("claiming %s: %w", ip, err)
		}
		obj = nil // re-read below by create's AlreadyExists, or created anew
	}
	return fmt.Errorf("claiming %s: %w", ip, errClaimContended)
}

// create claims ip for h alone. It returns nil, nil when it did, and the
// live object when the address was claimed already.
func (s *Store) create(ctx context.Context, ip netip.Addr, h holder) (*networkingv1.IPAddress, error) {
	obj, err := newClaim(ip, h)
	if err != nil {
		return nil, err
	}
	_, err = s.api.Create(ctx, obj, metav1.CreateOptions{FieldManager: fieldManager})
	switch {
	case err == nil:
		klog.FromContext(ctx).V(2).Info("Claimed address", "vip", ip)
		return nil, nil
	case !apierrors.IsAlreadyExists(err):
		return nil, fmt.Errorf("claiming %s: %w", ip, err)
	}
	live, err := s.api.Get(ctx, obj.Name, metav1.GetOptions{})
	if err != nil {
		// NotFound: released in between; the caller's retry creates it.
		return nil, fmt.Errorf("reading the claim of %s: %w", ip, err)
	}
	return live, nil
}

// write stores holders in obj, deleting it when none is left. Both carry
// obj's resourceVersion: a change made meanwhile by another instance fails
// the write with a Conflict instead of being overwritten.
func (s *Store) write(ctx context.Context, obj *networkingv1.IPAddress, holders []holder) (*networkingv1.IPAddress, error) {
	if len(holders) == 0 {
		uid, rv := obj.UID, obj.ResourceVersion
		err := s.api.Delete(ctx, obj.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
		return nil, err
	}
	next, err := withHolders(obj, holders)
	if err != nil {
		return nil, err
	}
	return s.api.Update(ctx, next, metav1.UpdateOptions{FieldManager: fieldManager})
}

// Release takes service (with uid, if known) off the claims of ips and off
// any other claim naming it except those of keep: a Service that moved or
// was deleted holds nothing it no longer shows.
func (s *Store) Release(ctx context.Context, service, uid string, ips, keep []netip.Addr) error {
	names := map[string]bool{}
	for _, ip := range ips {
		names[ip.String()] = true
	}
	for _, obj := range s.cache.ByHolder(service) {
		names[obj.Name] = true
	}
	for _, ip := range keep {
		delete(names, ip.String())
	}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(names)) {
		err := s.update(ctx, name, func(c claim) ([]holder, bool) { return leave(c, service, uid) })
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Collect drops stale holders (staleHolders) from every claim; a claim
// left without holders is deleted.
func (s *Store) Collect(ctx context.Context, lookup Lookup) error {
	logger := klog.FromContext(ctx)
	var errs []error
	for _, obj := range s.cache.List() {
		c, err := readClaim(obj)
		if err != nil || !c.ours {
			continue
		}
		stale := staleHolders(c, lookup, s.now(), s.grace)
		if len(stale) == 0 {
			continue
		}
		err = s.update(ctx, obj.Name, func(c claim) ([]holder, bool) {
			drop := staleHolders(c, lookup, s.now(), s.grace) // decided again on what was read
			kept := slices.DeleteFunc(slices.Clone(c.holders), func(h holder) bool { return slices.Contains(drop, h.Service) })
			return kept, len(drop) > 0
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		logger.Info("Removed stale address claim holders", "vip", c.ip, "services", stale)
	}
	return errors.Join(errs...)
}

// update applies change to the claim called name, starting from the
// cache and re-reading after a conflict.
func (s *Store) update(ctx context.Context, name string, change func(claim) ([]holder, bool)) error {
	obj, cached := s.cache.Get(name)
	for range claimRetries {
		fromCache := cached
		if !cached {
			var err error
			obj, err = s.api.Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("reading the claim of %s: %w", name, err)
			}
		}
		cached = false
		c, err := readClaim(obj)
		if err != nil {
			return err
		}
		if !c.ours {
			return nil
		}
		holders, changed := change(c)
		if !changed && fromCache {
			continue // the cache may lag: only the live claim can say there is nothing to do
		}
		if !changed {
			return nil
		}
		_, err = s.write(ctx, obj, holders)
		switch {
		case err == nil, apierrors.IsNotFound(err):
			return nil
		case !apierrors.IsConflict(err):
			return fmt.Errorf("updating the claim of %s: %w", name, err)
		}
	}
	return fmt.Errorf("updating the claim of %s: %w", name, errClaimContended)
}
