package provider

import (
	"context"

	v1 "k8s.io/api/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	cloudprovider "k8s.io/cloud-provider"

	"github.com/heraldlb/herald/provider/service"
)

// Backend provides load balancers of one kind (bare-metal VIPs, AWS NLBs).
// The provider owns everything Kubernetes-facing (parsing, events,
// conditions); a backend only makes the desired load balancer exist.
type Backend interface {
	// Start is called once, before any other method, with the cluster
	// handles the backend may need (for example to rebuild state from the
	// Services' status after a restart).
	Start(ctx context.Context, env Env) error
	// Ensure makes lb exist as described and returns its status.
	Ensure(ctx context.Context, lb *service.LoadBalancer) (*v1.LoadBalancerStatus, error)
	// UpdateNodes moves lb to a new set of nodes.
	UpdateNodes(ctx context.Context, lb *service.LoadBalancer) error
	// Get reports the load balancer of ref, if the backend holds one.
	Get(ctx context.Context, ref service.Ref) (*v1.LoadBalancerStatus, bool, error)
	// Delete removes the load balancer of ref; deleting what does not
	// exist succeeds.
	Delete(ctx context.Context, ref service.Ref) error
	// ConditionType is the Service condition that reports this backend's
	// outcome, e.g. herald.dev/AddressAllocated.
	ConditionType() string
}

// Env is what the provider hands a backend at start.
type Env struct {
	// Services lists Services from the controller manager's shared
	// informer; it has synced before the first Ensure/Get/Delete call.
	Services corelisters.ServiceLister
	// ServicesSynced reports whether Services has synced.
	ServicesSynced func() bool
	// Namespaces lists Namespaces, whose labels pools may select on;
	// NamespacesSynced reports whether it has synced. Both are nil when
	// the backend runs without a cluster.
	Namespaces       corelisters.NamespaceLister
	NamespacesSynced func() bool
	Recorder         record.EventRecorder
	Selection        service.Selection
	// RESTConfig lets a backend watch resources of its own (e.g. CRDs).
	RESTConfig *rest.Config
}

// ReasonedError is implemented by backend errors that carry the reason of
// the Warning event and condition users should see (e.g. AllocationFailed).
type ReasonedError interface {
	error
	Reason() string
}

// InstancesProvider is implemented by backends that know the machines the
// cluster runs on (aws); the provider then offers their InstancesV2 to the
// cloud node controllers.
type InstancesProvider interface {
	InstancesV2() (cloudprovider.InstancesV2, bool)
}
