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
// The provider owns everything Kubernetes-facing (parsing, finalizers,
// status, annotations, events, conditions); a backend only makes the
// desired load balancer exist and says what the Service should show.
type Backend interface {
	// Start is called once, before any other method, with the cluster
	// handles the backend may need (for example to rebuild state from the
	// Services' status after a restart).
	Start(ctx context.Context, env Env) error
	// Ensure makes lb exist as described and returns what the Service
	// should show.
	Ensure(ctx context.Context, lb *service.LoadBalancer) (*Result, error)
	// UpdateNodes moves the load balancer of a Service that has one to a
	// new set of nodes (lb.Nodes()); the provider calls it when the
	// eligible nodes change.
	UpdateNodes(ctx context.Context, lb *service.LoadBalancer) error
	// Delete removes the load balancer of ref; deleting what does not
	// exist succeeds.
	Delete(ctx context.Context, ref service.Ref) error
	// ConditionType is the Service condition that reports this backend's
	// outcome, e.g. herald.dev/AddressAllocated.
	ConditionType() string
	// AnnotationKeys are the Service annotations Results may set; the
	// provider removes them with the load balancer.
	AnnotationKeys() []string
}

// Result is what a backend made of a load balancer.
type Result struct {
	// Status goes to status.loadBalancer.
	Status *v1.LoadBalancerStatus
	// Annotations are facts about the load balancer other components read
	// from the Service (e.g. the pool of a bare-metal address). They are
	// written before Status, so that whoever sees the status sees them;
	// keys of AnnotationKeys not set here are removed.
	Annotations map[string]string
	// Warning is a problem the user should know about although the load
	// balancer works (e.g. an address no pool holds any more); nil if
	// none. It becomes a Warning event and the condition's reason.
	Warning *Warning
}

// Warning is a problem reported on a Service whose load balancer works.
type Warning struct {
	Reason  string
	Message string
}

// Env is what the provider hands a backend at start.
type Env struct {
	// Services lists Services from the controller manager's shared
	// informer; ServicesSynced reports whether it has synced.
	Services       corelisters.ServiceLister
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
	// Requeue asks for Services to be synced again now; never nil.
	Requeue Requeuer
}

// Requeuer lets a backend have Services synced again now rather than at
// their next retry, whose delay grows to minutes.
type Requeuer interface {
	// RequeuePending syncs again every Service whose last sync failed or
	// was deferred: something changed that may let it succeed (an address
	// was freed, a pool added or grown, start-up finished).
	RequeuePending()
	// RequeueAll syncs every Service again: something changed that may
	// change what Services show (pools were edited).
	RequeueAll()
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
