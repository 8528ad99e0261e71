package kubeclient

import (
	"context"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamiclister"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
)

// Informers is a shared informer factory over a Source, as client-go's
// informers.SharedInformerFactory is over a clientset: one informer per
// resource, however many parts of the process ask for it, all with the
// same list options and transform, started and stopped together. Its
// informers never resync (a resync only replays the cache to handlers,
// which herald's do not need).
type Informers struct {
	src       Source
	tweak     func(*metav1.ListOptions)
	transform cache.TransformFunc
	// byNamespace adds the namespace index listers read through.
	byNamespace bool

	mu        sync.Mutex
	informers map[Resource]cache.SharedIndexInformer
	started   map[Resource]bool
	wg        sync.WaitGroup
	shutdown  bool
}

// InformerOption configures Informers.
type InformerOption func(*Informers)

// WithTweakListOptions edits the options of every list and watch
// (selectors).
func WithTweakListOptions(tweak func(*metav1.ListOptions)) InformerOption {
	return func(f *Informers) { f.tweak = tweak }
}

// WithoutNamespaceIndex leaves out the index by namespace, for caches that
// are read without listers (their objects transformed into something
// listers cannot return): at 10k objects it is half a megabyte each.
func WithoutNamespaceIndex() InformerOption {
	return func(f *Informers) { f.byNamespace = false }
}

// WithTransform transforms every object before it enters a cache.
func WithTransform(t cache.TransformFunc) InformerOption {
	return func(f *Informers) { f.transform = t }
}

// NewInformers returns a factory of informers over src.
func NewInformers(src Source, opts ...InformerOption) *Informers {
	f := &Informers{src: src, byNamespace: true, informers: map[Resource]cache.SharedIndexInformer{}, started: map[Resource]bool{}}
	for _, o := range opts {
		o(f)
	}
	return f
}

// Informer returns the factory's informer of r, making it on first use.
// Like client-go's generated informers it indexes by namespace (unless
// WithoutNamespaceIndex), so that listers' per-namespace lists need not
// scan the cache.
func (f *Informers) Informer(r Resource) cache.SharedIndexInformer {
	f.mu.Lock()
	defer f.mu.Unlock()
	if inf, ok := f.informers[r]; ok {
		return inf
	}
	indexers := cache.Indexers{}
	if f.byNamespace {
		indexers[cache.NamespaceIndex] = cache.MetaNamespaceIndexFunc
	}
	inf := cache.NewSharedIndexInformerWithOptions(f.src.ListWatch(r, f.tweak), r.newObject(),
		cache.SharedIndexInformerOptions{Indexers: indexers, ObjectDescription: r.String()})
	if f.transform != nil {
		// Only fails once the informer runs, and it has not yet.
		_ = inf.SetTransform(f.transform)
	}
	f.informers[r] = inf
	return inf
}

// Start runs the informers not yet started until stop is closed; a
// factory that was shut down starts nothing.
func (f *Informers) Start(stop <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.shutdown {
		return
	}
	ctx := wait.ContextForChannel(stop)
	for r, inf := range f.informers {
		if f.started[r] {
			continue
		}
		f.started[r] = true
		f.wg.Go(func() { inf.RunWithContext(ctx) })
	}
}

// Shutdown waits for the started informers to stop (their stop channel
// must be closed) and keeps new ones from starting.
func (f *Informers) Shutdown() {
	f.mu.Lock()
	f.shutdown = true
	f.mu.Unlock()
	f.wg.Wait()
}

// The listers of the factory's informers, as client-go's typed informers
// offer them. herald-agent's Services and EndpointSlices have none: its
// caches hold them transformed (see provider/agent's compactor).

// NodeLister lists the cached Nodes.
func (f *Informers) NodeLister() corelisters.NodeLister {
	return corelisters.NewNodeLister(f.Informer(Nodes).GetIndexer())
}

// ServiceCIDRLister lists the cached ServiceCIDRs.
func (f *Informers) ServiceCIDRLister() networkinglisters.ServiceCIDRLister {
	return networkinglisters.NewServiceCIDRLister(f.Informer(ServiceCIDRs).GetIndexer())
}

// DynamicInformer is an informer of gvr's objects as Unstructured, with its
// lister: dynamicinformer.NewFilteredDynamicInformer's, without the
// dependency on client-go's typed informer factory.
func DynamicInformer(client dynamic.Interface, gvr schema.GroupVersionResource) (cache.SharedIndexInformer, cache.GenericLister) {
	res := client.Resource(gvr)
	inf := cache.NewSharedIndexInformerWithOptions(
		cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return res.List(ctx, o)
			},
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return res.Watch(ctx, o)
			},
		}, client),
		&unstructured.Unstructured{},
		cache.SharedIndexInformerOptions{
			Indexers:          cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
			ObjectDescription: gvr.String(),
		})
	return inf, dynamiclister.NewRuntimeObjectShim(dynamiclister.New(inf.GetIndexer(), gvr))
}
