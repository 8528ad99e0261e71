// Package provider implements k8s.io/cloud-provider's Interface for herald
// and herald's own Service controllers: they validate Services, write
// finalizers, status, annotations, events and conditions, and delegate the
// load balancers themselves to a Backend.
package provider

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/provider/service"
)

// Name is the name herald registers under (--cloud-provider=herald).
const Name = "herald"

// FieldManager owns the fields herald writes on Services.
const FieldManager = "herald-ccm"

// ErrNotReady marks errors that only mean "not yet": the sync is retried
// and nothing is reported on the Service, since a transient state written
// there would be churn on every restart.
var ErrNotReady = errors.New("not ready yet")

// ErrNotStarted is returned until the controller manager has handed the
// provider its clients and informers.
var ErrNotStarted = fmt.Errorf("%w: herald provider is not started", ErrNotReady)

// Provider is herald's cloudprovider.Interface.
type Provider struct {
	backend   Backend
	selection service.Selection
	now       func() time.Time
	metrics   *metrics

	mu       sync.Mutex
	ctx      context.Context
	client   kubernetes.Interface
	recorder record.EventRecorder
	config   *rest.Config
	startErr error
	// controllers are the Service controllers running, for Requeue.
	controllers []*ServiceController
}

var _ cloudprovider.Interface = (*Provider)(nil)
var _ cloudprovider.InformerUser = (*Provider)(nil)

// New returns a provider that delegates to backend; its controllers'
// metrics are registered on reg.
func New(backend Backend, selection service.Selection, reg prometheus.Registerer) (*Provider, error) {
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Provider{backend: backend, selection: selection, now: time.Now, metrics: m, startErr: ErrNotStarted}, nil
}

// Initialize builds the clients herald uses for events and conditions. The
// controller manager calls it before SetInformers and before any controller
// starts.
func (p *Provider) Initialize(clientBuilder cloudprovider.ControllerClientBuilder, stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-stop
		cancel()
	}()
	client := clientBuilder.ClientOrDie(FieldManager)
	config := clientBuilder.ConfigOrDie(FieldManager)
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartStructuredLogging(3)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})

	p.mu.Lock()
	defer p.mu.Unlock()
	p.ctx = ctx
	p.client = client
	p.config = config
	p.recorder = broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: Name})
}

// SetInformers starts the backend: the shared informers are what it
// rebuilds its state from.
func (p *Provider) SetInformers(factory informers.SharedInformerFactory) {
	services := factory.Core().V1().Services()
	namespaces := factory.Core().V1().Namespaces()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx == nil {
		p.startErr = fmt.Errorf("%w: SetInformers called before Initialize", ErrNotStarted)
		return
	}
	slimSharedInformers(factory, klog.FromContext(p.ctx))
	env := Env{
		Services:       services.Lister(),
		ServicesSynced: services.Informer().HasSynced,
		// Requesting the informer here registers it with the factory,
		// which the controller manager starts after SetInformers.
		Namespaces:       namespaces.Lister(),
		NamespacesSynced: namespaces.Informer().HasSynced,
		Recorder:         p.recorder,
		Selection:        p.selection,
		RESTConfig:       p.config,
		Requeue:          requeuer{p},
	}
	if err := p.backend.Start(p.ctx, env); err != nil {
		klog.FromContext(p.ctx).Error(err, "Starting the load balancer backend failed")
		p.startErr = fmt.Errorf("starting backend: %w", err)
		return
	}
	p.startErr = nil
}

func (p *Provider) ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.startErr
}

// LoadBalancer is not offered to the upstream controllers: herald's own
// Service controllers (controller.go) provide load balancers.
func (p *Provider) LoadBalancer() (cloudprovider.LoadBalancer, bool) { return nil, false }

// Instances is not offered: herald does not manage machines.
func (p *Provider) Instances() (cloudprovider.Instances, bool) { return nil, false }

// InstancesV2 is offered when the backend knows the machines (aws); the
// bare-metal backend does not manage machines.
func (p *Provider) InstancesV2() (cloudprovider.InstancesV2, bool) {
	if instances, ok := p.backend.(InstancesProvider); ok {
		return instances.InstancesV2()
	}
	return nil, false
}

// Zones is not offered.
func (p *Provider) Zones() (cloudprovider.Zones, bool) { return nil, false }

// Clusters is not offered.
func (p *Provider) Clusters() (cloudprovider.Clusters, bool) { return nil, false }

// Routes is not offered: pod routing is the CNI's job.
func (p *Provider) Routes() (cloudprovider.Routes, bool) { return nil, false }

// ProviderName returns "herald".
func (p *Provider) ProviderName() string { return Name }

// HasClusterID is true: herald identifies what it owns by --cluster-name.
func (p *Provider) HasClusterID() bool { return true }

// register adds a running controller to those Requeue reaches.
func (p *Provider) register(c *ServiceController) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.controllers = append(p.controllers, c)
}

func (p *Provider) running() []*ServiceController {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.controllers)
}

// requeuer is the backend's Requeuer over every running controller.
type requeuer struct{ p *Provider }

func (r requeuer) RequeuePending() {
	for _, c := range r.p.running() {
		c.requeuePending()
	}
}

func (r requeuer) RequeueAll() {
	for _, c := range r.p.running() {
		c.requeueAll()
	}
}
