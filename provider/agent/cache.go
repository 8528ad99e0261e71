package agent

import (
	"slices"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/heraldlb/herald/internal/kubeclient"
	"github.com/heraldlb/herald/provider/dataplane"
)

// cachedService is how the agent's informer cache holds a Service: what
// the data plane reads of it, parsed, and the Service itself only where
// the bare-metal speaker reads it (see speakerReads). At 10k ClusterIP
// Services, v1 Services and EndpointSlices were two thirds of the agent's
// live heap (30 of 45 MB; these, with the stores and sliceIndex, 13).
type cachedService struct {
	kubeclient.ObjectMeta
	svc  dataplane.Service
	full *v1.Service // nil unless speakerReads
}

// cachedSlice is how the cache holds an EndpointSlice: what the data plane
// reads, and the trigger time for the programming-duration metric.
type cachedSlice struct {
	kubeclient.ObjectMeta
	slice dataplane.EndpointSlice
	// triggered is the EndpointSlice controller's last-change-trigger-time,
	// zero when absent or unparsable.
	triggered time.Time
}

// speakerReads says whether the speaker needs a Service in full: it
// announces LoadBalancer Services, and removes its status conditions from
// a Service that stopped being one.
func speakerReads(svc *v1.Service) bool {
	return svc.Spec.Type == v1.ServiceTypeLoadBalancer || len(svc.Status.Conditions) > 0
}

// compactor is the informer transform of the agent's Services and
// EndpointSlices (see cachedService and cachedSlice); other objects are
// slimmed. Objects handed to a transform are the informer's own, so the
// full Services kept are slimmed in place.
type compactor struct {
	mu sync.Mutex
	// nodes holds one copy of each node name endpoints are on, which
	// their slices would otherwise each hold a copy of: a name per
	// endpoint, where a cluster has far fewer nodes than endpoints.
	nodes map[string]string
}

func newCompactor() *compactor { return &compactor{nodes: map[string]string{}} }

func (c *compactor) node(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.nodes[name]; ok {
		return n
	}
	c.nodes[name] = name
	return name
}

func (c *compactor) compact(obj any) (any, error) {
	switch o := obj.(type) {
	case *v1.Service:
		cs := &cachedService{ObjectMeta: kubeclient.ObjectMetaOf(o), svc: *dataplane.ServiceFrom(o)}
		if speakerReads(o) {
			if _, err := slimObject(o); err != nil {
				return nil, err
			}
			cs.full = o
		}
		return cs, nil
	case *discoveryv1.EndpointSlice:
		cs := &cachedSlice{ObjectMeta: kubeclient.ObjectMetaOf(o), slice: *dataplane.EndpointSliceFrom(o)}
		for i := range cs.slice.Endpoints {
			if ep := &cs.slice.Endpoints[i]; ep.Node != "" {
				ep.Node = c.node(ep.Node)
			}
		}
		if at, err := time.Parse(time.RFC3339Nano, o.Annotations[v1.EndpointsLastChangeTriggerTime]); err == nil {
			cs.triggered = at
		}
		return cs, nil
	}
	return slimObject(obj)
}

// cacheSource is dataplane.Source over the informer caches and the
// agent's index of their EndpointSlices.
type cacheSource struct {
	services cache.Indexer
	slices   cache.Indexer
	index    *sliceIndex
}

// newCacheSource reads the caches of a factory from NewInformerFactory.
func newCacheSource(f *kubeclient.Informers) cacheSource {
	return cacheSource{
		services: f.Informer(kubeclient.Services).GetIndexer(),
		slices:   f.Informer(kubeclient.EndpointSlices).GetIndexer(),
		index:    newSliceIndex(),
	}
}

func (c cacheSource) Service(namespace, name string) *dataplane.Service {
	if s := c.cached(namespace, name); s != nil {
		return &s.svc
	}
	return nil // not found: deleted
}

func (c cacheSource) cached(namespace, name string) *cachedService {
	return lookupService(c.services, namespace, name)
}

// lookupService finds a Service in the agent's Service cache.
func lookupService(services cache.Indexer, namespace, name string) *cachedService {
	obj, ok, _ := services.GetByKey(namespace + "/" + name)
	if !ok {
		return nil
	}
	s, _ := obj.(*cachedService)
	return s
}

func (c cacheSource) EndpointSlices(namespace, service string) []*dataplane.EndpointSlice {
	return c.index.get(namespace, service)
}

// all lists every cached Service and EndpointSlice, for a full build.
func (c cacheSource) all() ([]*dataplane.Service, []*dataplane.EndpointSlice) {
	objs := c.services.List()
	svcs := make([]*dataplane.Service, 0, len(objs))
	for _, o := range objs {
		if s, ok := o.(*cachedService); ok {
			svcs = append(svcs, &s.svc)
		}
	}
	objs = c.slices.List()
	sl := make([]*dataplane.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if s, ok := o.(*cachedSlice); ok {
			sl = append(sl, &s.slice)
		}
	}
	return svcs, sl
}

// SpeakerCache is the bare-metal speaker's view of the factory's caches
// (speaker.ServiceCache): the Services it reads in full, and which nodes
// have ready endpoints.
type SpeakerCache struct{ services, slices cache.Indexer }

// NewSpeakerCache reads the caches of a factory from NewInformerFactory.
func NewSpeakerCache(f *kubeclient.Informers) SpeakerCache {
	return SpeakerCache{
		services: f.Informer(kubeclient.Services).GetIndexer(),
		slices:   f.Informer(kubeclient.EndpointSlices).GetIndexer(),
	}
}

// Services lists the Services held in full: LoadBalancer Services, and
// others still carrying status conditions.
func (c SpeakerCache) Services() []*v1.Service {
	var out []*v1.Service
	for _, o := range c.services.List() {
		if s, ok := o.(*cachedService); ok && s.full != nil {
			out = append(out, s.full)
		}
	}
	return out
}

// Service returns one of the Services held in full, or nil.
func (c SpeakerCache) Service(namespace, name string) *v1.Service {
	if s := lookupService(c.services, namespace, name); s != nil {
		return s.full
	}
	return nil
}

// EndpointNodes lists, sorted, the nodes with a ready endpoint of each of
// the given Services. It reads every cached slice once: the speaker asks
// for few Services (those with externalTrafficPolicy Local), and keeps no
// index of its own (see sliceIndex).
func (c SpeakerCache) EndpointNodes(services []types.NamespacedName) map[types.NamespacedName][]string {
	out := map[types.NamespacedName][]string{}
	if len(services) == 0 {
		return out
	}
	want := map[types.NamespacedName]bool{}
	for _, n := range services {
		want[n] = true
	}
	for _, o := range c.slices.List() {
		s, ok := o.(*cachedSlice)
		if !ok {
			continue
		}
		n := types.NamespacedName{Namespace: s.Namespace, Name: s.slice.Service}
		if !want[n] {
			continue
		}
		for _, ep := range s.slice.Endpoints {
			if ep.Node != "" && ep.Ready {
				out[n] = append(out[n], ep.Node)
			}
		}
	}
	for n, nodes := range out {
		slices.Sort(nodes)
		out[n] = slices.Compact(nodes)
	}
	return out
}
