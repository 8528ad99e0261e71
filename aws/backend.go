package aws

import (
	"context"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/aws/api"
	"github.com/heraldlb/herald/aws/build"
	"github.com/heraldlb/herald/aws/deploy"
	"github.com/heraldlb/herald/provider"
	"github.com/heraldlb/herald/provider/service"
)

// Condition type and event reasons users see on their Services.
const (
	ConditionLoadBalancerReady = "herald.dev/LoadBalancerReady"
	ReasonUnknownAnnotation    = "UnknownAnnotation"
	ReasonOrphanFound          = "OrphanedLoadBalancer"
)

// Options are the backend's settings beyond the cloud config.
type Options struct {
	// GCDelete makes the garbage collection delete orphans instead of
	// only reporting them.
	GCDelete   bool
	GCInterval time.Duration
}

// Backend is the AWS provider.Backend.
type Backend struct {
	deployer *deploy.Deployer
	ec2      api.EC2
	region   string
	opts     Options
	buildOpt build.Options

	mu  sync.Mutex
	env provider.Env
}

var _ provider.Backend = (*Backend)(nil)

// New returns the backend over clients, for the cluster described by cfg
// (validated) in region and vpcID (discovered when the config omits them).
func New(cfg *Config, region, vpcID string, clients *api.Clients, opts Options) *Backend {
	ttl := cfg.CacheTTL.Duration
	if ttl == 0 {
		ttl = DefaultCacheTTL
	}
	if opts.GCInterval == 0 {
		opts.GCInterval = cfg.GCInterval.Duration
	}
	if opts.GCInterval == 0 {
		opts.GCInterval = DefaultGCInterval
	}
	cache := api.NewCache(clients.ELB, clients.EC2, ttl, time.Now)
	portRange, _ := cfg.portRange() // validated with the config
	return &Backend{
		deployer: deploy.New(cache, deploy.Config{ClusterName: cfg.ClusterName, VPCID: vpcID,
			NodeSecurityGroups: cfg.NodeSecurityGroups, NodePortRange: portRange}),
		ec2:      clients.EC2,
		region:   region,
		opts:     opts,
		buildOpt: build.Options{ClusterName: cfg.ClusterName, Tags: cfg.Tags, NodePortRange: portRange},
	}
}

// Start keeps the cluster handles and starts the garbage collection.
func (b *Backend) Start(ctx context.Context, env provider.Env) error {
	b.mu.Lock()
	b.env = env
	b.mu.Unlock()
	if env.Services != nil {
		go wait.UntilWithContext(ctx, b.collectGarbage, b.opts.GCInterval)
	}
	return nil
}

// ConditionType is the condition reporting the load balancer.
func (b *Backend) ConditionType() string { return ConditionLoadBalancerReady }

// AnnotationKeys is empty: the Service's status says all there is.
func (b *Backend) AnnotationKeys() []string { return nil }

// Ensure provides lb's NLB. Invalid annotations fail in build, before any
// AWS call.
func (b *Backend) Ensure(ctx context.Context, lb *service.LoadBalancer) (*provider.Result, error) {
	stack, err := build.Build(lb, b.buildOpt)
	if err != nil {
		return nil, err
	}
	svc := b.service(lb.Service.Namespace, lb.Service.Name)
	b.warnUnknown(svc, lb.Annotations)
	dns, err := b.deployer.Ensure(ctx, stack, hostnames(svc))
	if err != nil {
		return nil, err
	}
	return &provider.Result{Status: &v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{{Hostname: dns}}}}, nil
}

// UpdateNodes reconciles the whole stack; with the cache warm that costs
// only the target changes.
func (b *Backend) UpdateNodes(ctx context.Context, lb *service.LoadBalancer) error {
	_, err := b.Ensure(ctx, lb)
	return err
}

// Get reports the Service's load balancer (not part of provider.Backend:
// herald's controllers keep what they need on the Service).
func (b *Backend) Get(ctx context.Context, ref service.Ref) (*v1.LoadBalancerStatus, bool, error) {
	dns, ok, err := b.deployer.Exists(ctx, ref.Key())
	if err != nil || !ok {
		return nil, false, err
	}
	return &v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{{Hostname: dns}}}, true, nil
}

// Delete removes everything herald holds for the Service.
func (b *Backend) Delete(ctx context.Context, ref service.Ref) error {
	return b.deployer.Delete(ctx, ref.Key())
}

func (b *Backend) service(namespace, name string) *v1.Service {
	b.mu.Lock()
	env := b.env
	b.mu.Unlock()
	if env.Services == nil {
		return nil
	}
	svc, err := env.Services.Services(namespace).Get(name)
	if err != nil {
		return nil
	}
	return svc
}

func hostnames(svc *v1.Service) []string {
	if svc == nil {
		return nil
	}
	var out []string
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.Hostname != "" {
			out = append(out, in.Hostname)
		}
	}
	return out
}

// warnUnknown names aws-load-balancer-* annotations herald does not read;
// the event recorder folds repeats into one event with a count.
func (b *Backend) warnUnknown(svc *v1.Service, annotations map[string]string) {
	unknown := build.UnknownAnnotations(annotations)
	if svc == nil || len(unknown) == 0 || b.env.Recorder == nil {
		return
	}
	b.env.Recorder.Eventf(svc, v1.EventTypeWarning, ReasonUnknownAnnotation,
		"herald ignores these annotations: %s", strings.Join(unknown, ", "))
}

// collectGarbage looks for stacks whose Service is gone.
func (b *Backend) collectGarbage(ctx context.Context) {
	logger := klog.FromContext(ctx)
	if b.env.ServicesSynced != nil && !b.env.ServicesSynced() {
		return // a Service not yet in the cache is not gone
	}
	orphans, err := b.deployer.GC(ctx, b.lookup, b.opts.GCDelete)
	if err != nil {
		logger.Error(err, "Garbage collection of AWS load balancers failed")
	}
	for _, o := range orphans {
		if o.Deleted {
			logger.Info("Deleted orphaned load balancer", "lb", o.LoadBalancer, "service", o.Service)
		} else {
			logger.Info("Orphaned load balancer found; start herald-ccm with --aws-gc-delete to delete such", "lb", o.LoadBalancer, "service", o.Service)
		}
	}
	gcOrphans.Set(float64(len(orphans)))
}

func (b *Backend) lookup(key string) deploy.ServiceState {
	namespace, name, ok := strings.Cut(key, "/")
	if !ok {
		return deploy.ServiceState{}
	}
	svc := b.service(namespace, name)
	if svc == nil || svc.Spec.Type != v1.ServiceTypeLoadBalancer {
		return deploy.ServiceState{}
	}
	return deploy.ServiceState{Exists: true, UID: string(svc.UID), Hostnames: hostnames(svc)}
}

// InstancesV2 offers the node lifecycle answers from EC2.
func (b *Backend) InstancesV2() (cloudprovider.InstancesV2, bool) {
	return &Instances{ec2: b.ec2, region: b.region}, true
}
