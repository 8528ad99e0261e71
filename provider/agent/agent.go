package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/knftables"

	"github.com/heraldlb/herald/internal/kubeclient"
	"github.com/heraldlb/herald/provider/dataplane"
)

// Defaults for the optional Config fields.
const (
	// DefaultFullSyncPeriod is kube-proxy's: a full sync repairs anything
	// changed behind herald's back, but also forgets ClientIP affinity
	// choices, so it is not run at every periodic sync.
	DefaultFullSyncPeriod = time.Hour
	// labelServiceProxyName marks Services that another proxy handles;
	// herald, like kube-proxy, leaves them alone.
	labelServiceProxyName = "service.kubernetes.io/service-proxy-name"
)

// Config is what cmd/herald-agent's flags set.
type Config struct {
	// NodeName is the Node this agent runs on; required.
	NodeName string
	// Dataplane tunes the ruleset (node port CIDRs, local traffic, masquerade).
	Dataplane dataplane.Options
	// LocalFromNode replaces Dataplane.Local.PodCIDRs with this Node's
	// spec.podCIDRs at every sync (--detect-local-mode=NodeCIDR).
	LocalFromNode bool
	// MinSyncPeriod, SyncPeriod and Burst bound the sync frequency: at most
	// Burst syncs back to back, then one per MinSyncPeriod; at least one
	// every SyncPeriod.
	MinSyncPeriod time.Duration
	SyncPeriod    time.Duration
	Burst         int
	// FullSyncPeriod is how often a sync rewrites the whole table even when
	// a partial one would do; 0 means DefaultFullSyncPeriod.
	FullSyncPeriod time.Duration
	// LivenessThreshold is how long a sync may stay due before /livez
	// fails; 0 means twice SyncPeriod.
	LivenessThreshold time.Duration
}

// Deps are the agent's connections to the outside world. Source, NFT and
// Registerer are required; Clock and Listen default to the real ones.
type Deps struct {
	// Source lists and watches the cluster (kubeclient.Client).
	Source     kubeclient.Source
	NFT        knftables.Interface
	Registerer prometheus.Registerer
	// BatchElements: NFT is knftables.New's, which runs the nft binary, so
	// full syncs may fold elements (dataplane.BatchElements).
	BatchElements bool
	// Reloader, when set, does periodic full syncs by rewriting elements
	// over netlink (dataplane.ReloadElements); nil means always through NFT.
	Reloader dataplane.ElementReloader
	Clock    clock.WithTicker
	// Listen opens the healthCheckNodePort listeners.
	Listen ListenFunc
	// Conntrack deletes UDP conntrack entries that a sync made stale; nil
	// leaves them to time out (established UDP flows then keep following a
	// removed endpoint).
	Conntrack Conntrack
	// Informers, when set, is the factory for Services and EndpointSlices,
	// shared with whatever else in the process watches them (the bare-metal
	// speaker) so they are cached once; it must come from
	// NewInformerFactory. Nil: the agent makes its own.
	Informers *kubeclient.Informers
	// Recorder, when set, records a Warning Event on the Node when
	// LocalFromNode finds no pod ranges; nil leaves it to the log.
	Recorder record.EventRecorder
}

// Agent keeps this node's herald nftables table in line with the cluster's
// Services and EndpointSlices, and serves healthCheckNodePorts.
type Agent struct {
	cfg     Config
	clock   clock.WithTicker
	factory *kubeclient.Informers
	nodeInf *kubeclient.Informers
	nodes   corelisters.NodeLister
	cidrs   networkinglisters.ServiceCIDRLister // nil where the apiserver serves no ServiceCIDRs
	// serviceCIDRsServed says whether unallocated ClusterIPs can be refused.
	serviceCIDRsServed bool
	synced             []cache.InformerSynced
	applier            *dataplane.Applier
	builder            *dataplane.Builder
	runner             *Runner
	metrics            *metrics
	health             *healthState
	hc                 *healthCheckServers
	lastFull           time.Time // of the last successful full sync; only the sync goroutine uses it
	changes            *changeTracker
	source             cacheSource
	conntrack          Conntrack
	recorder           record.EventRecorder
	// reportedPodCIDRs are the Node's pod ranges last reported (nil before
	// the first report); only the sync goroutine uses it.
	reportedPodCIDRs *[]netip.Prefix
	// lastApplied is the ruleset of the last successful sync, to find the
	// UDP flows the next one makes stale; only the sync goroutine uses it.
	lastApplied *dataplane.Ruleset
	// onSync, when set (tests only), is called after every sync attempt from
	// the sync goroutine.
	onSync func(syncReport)
}

type syncReport struct {
	result dataplane.SyncResult
	err    error
}

// New wires an Agent; nothing runs until Run.
func New(cfg Config, deps Deps) (*Agent, error) {
	if err := cfg.complete(); err != nil {
		return nil, err
	}
	if deps.Source == nil || deps.NFT == nil || deps.Registerer == nil {
		return nil, errors.New("agent: Source, NFT and Registerer are required")
	}
	if deps.Clock == nil {
		deps.Clock = clock.RealClock{}
	}
	if deps.Listen == nil {
		deps.Listen = net.Listen
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a := &Agent{
		cfg:       cfg,
		clock:     deps.Clock,
		applier:   newApplier(deps),
		builder:   dataplane.NewBuilder(),
		changes:   newChangeTracker(deps.Clock),
		conntrack: deps.Conntrack,
		recorder:  deps.Recorder,
		metrics:   m,
		health:    newHealthState(deps.Clock, cfg.SyncPeriod, cfg.LivenessThreshold),
	}
	a.hc = newHealthCheckServers(deps.Listen, a.health.healthy, m)
	a.runner, err = NewRunner("dataplane-sync", a.sync, RunnerConfig{
		MinInterval: cfg.MinSyncPeriod, MaxInterval: cfg.SyncPeriod, Burst: cfg.Burst,
	}, deps.Clock)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := a.setupInformers(deps.Source, deps.Informers); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return a, nil
}

func (c *Config) complete() error {
	if c.NodeName == "" {
		return errors.New("agent: node name is required")
	}
	if c.FullSyncPeriod == 0 {
		c.FullSyncPeriod = DefaultFullSyncPeriod
	}
	if c.LivenessThreshold == 0 {
		c.LivenessThreshold = 2 * c.SyncPeriod
	}
	return nil
}

// NewInformerFactory returns the factory the agent watches Services and
// EndpointSlices through. Like kube-proxy, it skips what another proxy
// handles and the EndpointSlices of headless Services, which have no rules:
// at scale that is most of the watch traffic saved. Its caches hold
// Services and EndpointSlices compacted (see compactor), which no
// lister can return: read them through cacheSource and SpeakerCache.
func NewInformerFactory(src kubeclient.Source) *kubeclient.Informers {
	selector := "!" + labelServiceProxyName + ",!" + v1.IsHeadlessService
	return kubeclient.NewInformers(src,
		kubeclient.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }),
		kubeclient.WithTransform(newCompactor().compact), kubeclient.WithoutNamespaceIndex())
}

// setupInformers watches Services and EndpointSlices cluster-wide (through
// shared, or a factory of its own) and this Node alone.
func (a *Agent) setupInformers(src kubeclient.Source, shared *kubeclient.Informers) error {
	a.factory = shared
	if a.factory == nil {
		a.factory = NewInformerFactory(src)
	}
	a.nodeInf = kubeclient.NewInformers(src,
		kubeclient.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector(metav1.ObjectNameField, a.cfg.NodeName).String()
		}))

	svcInf, sliceInf, nodeInf := a.factory.Informer(kubeclient.Services), a.factory.Informer(kubeclient.EndpointSlices),
		a.nodeInf.Informer(kubeclient.Nodes)
	a.nodes = a.nodeInf.NodeLister()
	a.source = newCacheSource(a.factory)

	// Each event names the Service it concerns, so that the sync rebuilds
	// that Service alone.
	services := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.changes.service(obj); a.requestSync() },
		UpdateFunc: func(_, obj any) { a.changes.service(obj); a.requestSync() },
		DeleteFunc: func(obj any) { a.changes.service(obj); a.requestSync() },
	}
	slices := cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { a.indexSlice(nil, obj); a.changes.slice(obj, false); a.requestSync() },
		UpdateFunc: func(old, obj any) {
			a.indexSlice(old, obj)
			// A slice relabelled to another Service changes both.
			a.changes.slice(old, true)
			a.changes.slice(obj, false)
			a.requestSync()
		},
		DeleteFunc: func(obj any) {
			if s, ok := unwrap(obj).(*cachedSlice); ok {
				a.source.index.remove(s)
			}
			a.changes.slice(obj, true)
			a.requestSync()
		},
	}
	// Nodes update their status often; only the addresses, the zone
	// (topology hints) and the pod ranges (LocalFromNode) matter here.
	node := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { a.requestSync() },
		UpdateFunc: func(o, n any) {
			on, ok1 := o.(*v1.Node)
			nn, ok2 := n.(*v1.Node)
			if !ok1 || !ok2 || nodeChanged(on, nn) {
				a.requestSync()
			}
		},
		DeleteFunc: func(any) { a.requestSync() },
	}
	// ServiceCIDRs change the skeleton (see dataplane.Options): any event
	// is a full rebuild, which they are rare enough to afford.
	always := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.requestSync() },
		UpdateFunc: func(_, _ any) { a.requestSync() },
		DeleteFunc: func(any) { a.requestSync() },
	}
	type registration struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}
	regs := []registration{{svcInf, services}, {sliceInf, slices}, {nodeInf, node}}
	// An informer on a resource the apiserver does not serve never syncs,
	// and the agent would never start: clusters before Kubernetes 1.33 have
	// no ServiceCIDR objects, only the apiserver's --service-cluster-ip-range.
	if a.serviceCIDRsServed = servesServiceCIDRs(src); a.serviceCIDRsServed {
		cidrInf := a.factory.Informer(kubeclient.ServiceCIDRs)
		a.cidrs = a.factory.ServiceCIDRLister()
		regs = append(regs, registration{cidrInf, always})
	}
	for _, reg := range regs {
		r, err := reg.inf.AddEventHandler(reg.h)
		if err != nil {
			return fmt.Errorf("event handler: %w", err)
		}
		a.synced = append(a.synced, r.HasSynced)
	}
	return nil
}

// indexSlice records a slice added or updated in the index the sync reads,
// before the event marks its Service changed (see sliceIndex).
func (a *Agent) indexSlice(old, obj any) {
	s, ok := obj.(*cachedSlice)
	if !ok {
		return
	}
	prev, _ := old.(*cachedSlice)
	a.source.index.set(prev, s)
}

// nodeChanged says whether a Node update changes what a sync reads.
func nodeChanged(o, n *v1.Node) bool {
	return !reflect.DeepEqual(o.Status.Addresses, n.Status.Addresses) ||
		o.Labels[v1.LabelTopologyZone] != n.Labels[v1.LabelTopologyZone] ||
		!slices.Equal(o.Spec.PodCIDRs, n.Spec.PodCIDRs) || o.Spec.PodCIDR != n.Spec.PodCIDR
}

// requestSync asks for a sync and starts the liveness clock for it.
func (a *Agent) requestSync() {
	a.health.queued()
	a.runner.Run()
}

// Run syncs until ctx ends. It leaves the table in place when it returns:
// a restarted agent replaces it atomically with its first full sync, so
// traffic keeps flowing across restarts. Only --cleanup removes it.
func (a *Agent) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithValues("node", a.cfg.NodeName)
	ctx = klog.NewContext(ctx, logger)
	a.health.queued() // the first sync is due from the start
	a.factory.Start(ctx.Done())
	a.nodeInf.Start(ctx.Done())
	defer func() {
		a.hc.closeAll()
		a.factory.Shutdown()
		a.nodeInf.Shutdown()
	}()
	if !a.serviceCIDRsServed {
		logger.Info("The apiserver serves no networking.k8s.io/v1 ServiceCIDRs (Kubernetes before 1.33): traffic to unallocated ClusterIPs is not refused")
	}
	logger.Info("Waiting for informer caches")
	if !cache.WaitForCacheSync(ctx.Done(), a.synced...) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("agent: informer caches did not sync")
	}
	logger.Info("Starting dataplane sync", "minSyncPeriod", a.cfg.MinSyncPeriod,
		"syncPeriod", a.cfg.SyncPeriod, "burst", a.cfg.Burst, "fullSyncPeriod", a.cfg.FullSyncPeriod)
	a.runner.Run()
	a.runner.Loop(ctx)
	logger.Info("Stopped; the nftables table stays in place")
	return nil
}

// HealthHandler serves /readyz, /livez and /healthz.
func (a *Agent) HealthHandler() http.Handler { return a.health.handler() }

// Forwarding is closed once the first full sync has put the ruleset in the
// kernel: from then on this node forwards Service traffic. An announcer on
// the same node waits for it, so that no router or client is sent to a node
// that would drop the VIP's traffic.
func (a *Agent) Forwarding() <-chan struct{} { return a.health.forwarding }

func newApplier(deps Deps) *dataplane.Applier {
	var opts []dataplane.ApplierOption
	if deps.BatchElements {
		opts = append(opts, dataplane.BatchElements())
	}
	if deps.Reloader != nil {
		opts = append(opts, dataplane.ReloadElements(deps.Reloader))
	}
	return dataplane.NewApplier(deps.NFT, opts...)
}

// servesServiceCIDRs asks the apiserver's discovery whether it serves
// networking.k8s.io/v1 servicecidrs. Only a definite "not found" says no: on
// any other error the informer is started, and it retries as informers do.
func servesServiceCIDRs(src kubeclient.Source) bool {
	resources, err := src.ServerResourcesForGroupVersion(networkingv1.SchemeGroupVersion.String())
	if apierrors.IsNotFound(err) {
		return false
	}
	if err != nil || resources == nil {
		return true
	}
	return slices.ContainsFunc(resources.APIResources, func(r metav1.APIResource) bool { return r.Name == "servicecidrs" })
}
