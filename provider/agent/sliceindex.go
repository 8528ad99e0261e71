package agent

import (
	"slices"
	"sync"

	"github.com/heraldlb/herald/provider/dataplane"
)

// sliceIndex finds a Service's EndpointSlices among the cached ones, as
// client-go's indexers do, without their set per Service, which at 10k
// Services was 3 MB of the agent's heap: most Services have one slice.
//
// The agent's EndpointSlice event handler updates it before it marks the
// Service changed, so a sync that rebuilds a changed Service finds its
// slices as the event left them. (An index of its own handler would not:
// an informer's handlers run independently of each other.)
type sliceIndex struct {
	mu    sync.RWMutex
	bySvc map[svcKey][]*cachedSlice
}

type svcKey struct{ namespace, name string }

func newSliceIndex() *sliceIndex { return &sliceIndex{bySvc: map[svcKey][]*cachedSlice{}} }

// set records s, in place of the slice of its name it replaces; old, when
// not nil, is that slice's previous version, which may have named another
// Service.
func (x *sliceIndex) set(old, s *cachedSlice) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if old != nil {
		x.removeLocked(old)
	}
	if s.slice.Service == "" {
		return
	}
	k := svcKey{s.Namespace, s.slice.Service}
	list := x.bySvc[k]
	if i := slices.IndexFunc(list, func(c *cachedSlice) bool { return c.Name == s.Name }); i >= 0 {
		list[i] = s
		return
	}
	x.bySvc[k] = append(list, s)
}

// remove forgets a deleted slice.
func (x *sliceIndex) remove(s *cachedSlice) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.removeLocked(s)
}

func (x *sliceIndex) removeLocked(s *cachedSlice) {
	k := svcKey{s.Namespace, s.slice.Service}
	list := slices.DeleteFunc(x.bySvc[k], func(c *cachedSlice) bool { return c.Name == s.Name })
	if len(list) == 0 {
		delete(x.bySvc, k)
		return
	}
	x.bySvc[k] = list
}

// get returns the data plane's view of a Service's slices.
func (x *sliceIndex) get(namespace, service string) []*dataplane.EndpointSlice {
	x.mu.RLock()
	defer x.mu.RUnlock()
	list := x.bySvc[svcKey{namespace, service}]
	out := make([]*dataplane.EndpointSlice, len(list))
	for i, s := range list {
		out[i] = &s.slice
	}
	return out
}
