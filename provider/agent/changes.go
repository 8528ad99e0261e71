package agent

import (
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
)

// changeTracker collects, between two syncs, which Services the informers
// reported changed (the Service itself or one of its EndpointSlices), so
// that a sync rebuilds those and looks at nothing else: its cost follows
// the change, not the cluster. It plays the part of kube-proxy's
// ServiceChangeTracker and EndpointsChangeTracker, without their copies of
// the objects: the informer caches are the state.
//
// It also keeps the EndpointSlices' change trigger times (the annotation
// the EndpointSlice controller stamps) until the sync that programs them,
// for herald_network_programming_duration_seconds.
type changeTracker struct {
	clock clock.PassiveClock
	// since ignores trigger times from before the agent started: the first
	// sync would otherwise report how old the cluster's slices are.
	since time.Time

	mu       sync.Mutex
	services map[types.NamespacedName]struct{}
	triggers []trigger
}

// trigger is a change the EndpointSlice controller made at a known time.
type trigger struct {
	family string // "IPv4" or "IPv6", as kube-proxy labels it
	at     time.Time
}

func newChangeTracker(clk clock.PassiveClock) *changeTracker {
	return &changeTracker{clock: clk, since: clk.Now(), services: map[types.NamespacedName]struct{}{}}
}

// service records a Service event.
func (c *changeTracker) service(obj any) {
	if svc, ok := unwrap(obj).(*cachedService); ok {
		c.mark(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name})
	}
}

// slice records an EndpointSlice event; deleted is true for deletions,
// whose trigger time is that of the slice's last update, not of the
// deletion (kube-proxy ignores it too).
func (c *changeTracker) slice(obj any, deleted bool) {
	s, ok := unwrap(obj).(*cachedSlice)
	if !ok || s.slice.Service == "" {
		return
	}
	c.mark(types.NamespacedName{Namespace: s.Namespace, Name: s.slice.Service})
	if deleted || !s.triggered.After(c.since) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.triggers = append(c.triggers, trigger{family: familyLabel(s.slice.AddressType), at: s.triggered})
}

func familyLabel(t discoveryv1.AddressType) string {
	if t == discoveryv1.AddressTypeIPv6 {
		return string(v1.IPv6Protocol)
	}
	return string(v1.IPv4Protocol)
}

func (c *changeTracker) mark(n types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.services[n] = struct{}{}
}

// take returns and forgets the Services changed since the last take, and
// the trigger times recorded with them.
func (c *changeTracker) take() ([]types.NamespacedName, []trigger) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]types.NamespacedName, 0, len(c.services))
	for n := range c.services {
		out = append(out, n)
	}
	// A new map, not clear: the first sync takes every Service, and a
	// cleared map would keep room for them all.
	c.services = map[types.NamespacedName]struct{}{}
	triggers := c.triggers
	c.triggers = nil
	return out, triggers
}

// putBack returns what a sync took but did not program: the trigger times
// of a failed sync (the Services of a failed apply need no putting back:
// the Builder has taken them in, and the Applier's next sync after a
// failure is full), or everything when the sync could not even build.
func (c *changeTracker) putBack(services []types.NamespacedName, triggers []trigger) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range services {
		c.services[n] = struct{}{}
	}
	c.triggers = append(triggers, c.triggers...)
}

// unwrap returns a deleted object from the tombstone an informer hands
// over when it missed the deletion itself.
func unwrap(obj any) any {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return obj
}
