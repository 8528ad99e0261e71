// Package claimstest is a fake of the IPAddress API for tests of code that
// claims addresses: it behaves as the apiserver does where claims rely on
// it (atomic create, resourceVersion and UID preconditions) and doubles as
// the informer's cache.
package claimstest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/bare-metal/claims"
)

var ipAddressResource = networkingv1.Resource("ipaddresses")

// APIServer stores IPAddresses as the apiserver does for claims: create
// fails on an existing name, update and delete check the resourceVersion
// (and delete the UID) they were given. Its contents are also a claim
// cache (Cache), always fresh; watchers get every change, as informer
// handlers would.
type APIServer struct {
	mu       sync.Mutex
	objs     map[string]*networkingv1.IPAddress
	rv       int
	writes   int
	watchers []claims.Reservations
}

var _ claims.API = (*APIServer)(nil)

// NewAPIServer returns an empty fake.
func NewAPIServer() *APIServer {
	return &APIServer{objs: map[string]*networkingv1.IPAddress{}}
}

// Watch tells r about every later change, from inside the write as an
// informer handler would (without the lag).
func (f *APIServer) Watch(r claims.Reservations) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchers = append(f.watchers, r)
}

func (f *APIServer) notify(obj *networkingv1.IPAddress, gone bool) {
	for _, w := range f.watchers {
		claims.Observe(context.Background(), w, obj.DeepCopy(), gone)
	}
}

// Get returns the stored object.
func (f *APIServer) Get(_ context.Context, name string, _ metav1.GetOptions) (*networkingv1.IPAddress, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	obj, ok := f.objs[name]
	if !ok {
		return nil, apierrors.NewNotFound(ipAddressResource, name)
	}
	return obj.DeepCopy(), nil
}

// Create stores obj unless its name is taken.
func (f *APIServer) Create(_ context.Context, obj *networkingv1.IPAddress, _ metav1.CreateOptions) (*networkingv1.IPAddress, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.objs[obj.Name]; ok {
		return nil, apierrors.NewAlreadyExists(ipAddressResource, obj.Name)
	}
	obj = obj.DeepCopy()
	obj.UID = types.UID("uid-" + strconv.Itoa(f.rv+1))
	return f.store(obj), nil
}

// store keeps obj at the next resourceVersion and tells the watchers; f.mu
// is held.
func (f *APIServer) store(obj *networkingv1.IPAddress) *networkingv1.IPAddress {
	f.rv++
	f.writes++
	stored := obj.DeepCopy()
	stored.ResourceVersion = strconv.Itoa(f.rv)
	f.objs[obj.Name] = stored
	f.notify(stored, false)
	return stored.DeepCopy()
}

// Update replaces the object if obj carries its current resourceVersion.
func (f *APIServer) Update(_ context.Context, obj *networkingv1.IPAddress, _ metav1.UpdateOptions) (*networkingv1.IPAddress, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.objs[obj.Name]
	if !ok {
		return nil, apierrors.NewNotFound(ipAddressResource, obj.Name)
	}
	if obj.ResourceVersion != cur.ResourceVersion {
		return nil, apierrors.NewConflict(ipAddressResource, obj.Name, fmt.Errorf("resourceVersion %s is not %s", obj.ResourceVersion, cur.ResourceVersion))
	}
	return f.store(obj), nil
}

// Delete removes the object if the preconditions hold.
func (f *APIServer) Delete(_ context.Context, name string, opts metav1.DeleteOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.objs[name]
	if !ok {
		return apierrors.NewNotFound(ipAddressResource, name)
	}
	if p := opts.Preconditions; p != nil && (p.UID != nil && *p.UID != cur.UID || p.ResourceVersion != nil && *p.ResourceVersion != cur.ResourceVersion) {
		return apierrors.NewConflict(ipAddressResource, name, fmt.Errorf("precondition failed"))
	}
	f.writes++
	delete(f.objs, name)
	f.notify(cur, true)
	return nil
}

// Writes counts the successful writes so far.
func (f *APIServer) Writes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes
}

// Holders lists the Services the claim of ip names.
func (f *APIServer) Holders(ip string) []string {
	obj, ok := f.Cache().Get(ip)
	if !ok {
		return nil
	}
	names, _ := claims.HolderIndex(obj)
	return names
}

// Count is how many claims are stored.
func (f *APIServer) Count() int { return len(f.Cache().List()) }

// Cache is a claims.Cache over the fake's current contents.
func (f *APIServer) Cache() claims.Cache { return liveCache{f} }

type liveCache struct{ f *APIServer }

func (c liveCache) Get(name string) (*networkingv1.IPAddress, bool) {
	obj, err := c.f.Get(context.Background(), name, metav1.GetOptions{})
	return obj, err == nil
}

func (c liveCache) ByHolder(service string) []*networkingv1.IPAddress {
	return byHolder(c.List(), service)
}

func (c liveCache) List() []*networkingv1.IPAddress {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	out := make([]*networkingv1.IPAddress, 0, len(c.f.objs))
	for _, obj := range c.f.objs {
		out = append(out, obj.DeepCopy())
	}
	return out
}

func byHolder(objs []*networkingv1.IPAddress, service string) []*networkingv1.IPAddress {
	var out []*networkingv1.IPAddress
	for _, obj := range objs {
		if names, _ := claims.HolderIndex(obj); slices.Contains(names, service) {
			out = append(out, obj)
		}
	}
	return out
}

// Snapshot is a cache that stopped at this moment: an informer lagging
// behind every later write.
func (f *APIServer) Snapshot() claims.Cache {
	s := snapshotCache{}
	for _, obj := range f.Cache().List() {
		s[obj.Name] = obj
	}
	return s
}

type snapshotCache map[string]*networkingv1.IPAddress

func (s snapshotCache) Get(name string) (*networkingv1.IPAddress, bool) {
	obj, ok := s[name]
	return obj, ok
}

func (s snapshotCache) ByHolder(service string) []*networkingv1.IPAddress {
	return byHolder(s.List(), service)
}

func (s snapshotCache) List() []*networkingv1.IPAddress { return slices.Collect(maps.Values(s)) }

// EmptyCache is an informer that has not seen anything yet.
type EmptyCache struct{}

// Get finds nothing.
func (EmptyCache) Get(string) (*networkingv1.IPAddress, bool) { return nil, false }

// ByHolder finds nothing.
func (EmptyCache) ByHolder(string) []*networkingv1.IPAddress { return nil }

// List finds nothing.
func (EmptyCache) List() []*networkingv1.IPAddress { return nil }
