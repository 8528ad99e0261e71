package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The CEL rules on addresses check what can be checked on one string: a
// CIDR without host bits, or a first-last range whose ends are addresses of
// one family (spaces around '-' are accepted, as MetalLB and ipam.ParseRange
// do). CEL has no ordering on IP addresses, so first <= last, overlaps inside
// the pool and overlaps with other pools are checked by herald-ccm and
// reported in status.conditions (Ready=False/InvalidAddresses, Conflicting).
// maxItems/maxLength bound the rules' estimated cost. (cel.bind would make
// the range rules shorter but is not in the CRD CEL environment of 1.37.)

// IPAddressPoolSpec is the desired state of an IPAddressPool.
type IPAddressPoolSpec struct {
	// Addresses are the addresses herald may hand out from this pool: CIDRs
	// ("192.0.2.0/28", "2001:db8::/120") or inclusive first-last ranges
	// ("192.0.2.10-192.0.2.20", "2001:db8::10-2001:db8::1f"), IPv4 and IPv6
	// mixed as needed. A single address is written as a /32 or /128.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=128
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=100
	// +kubebuilder:validation:items:XValidation:rule=`self.contains('/') || self.contains('-')`,messageExpression=`"'" + self + "' is neither a CIDR (192.0.2.0/28) nor a first-last range (192.0.2.10-192.0.2.20); write a single address as a /32 or /128"`
	// +kubebuilder:validation:items:XValidation:rule=`!self.contains('/') || isCIDR(self)`,messageExpression=`"'" + self + "' is not a CIDR: an IPv4 or IPv6 address, '/', and a prefix length (192.0.2.0/28, 2001:db8::/120)"`
	// +kubebuilder:validation:items:XValidation:rule=`!self.contains('/') || !isCIDR(self) || cidr(self) == cidr(self).masked()`,messageExpression=`"'" + self + "' has host bits set: write the network's first address before the '/' (192.0.2.0/28, not 192.0.2.1/28)"`
	// +kubebuilder:validation:items:XValidation:rule=`self.contains('/') || !self.contains('-') || (self.split('-').size() == 2 && isIP(self.split('-')[0].trim()) && isIP(self.split('-')[1].trim()))`,messageExpression=`"'" + self + "' is not a range of two IP addresses joined by '-'"`
	// +kubebuilder:validation:items:XValidation:rule=`self.contains('/') || self.split('-').size() != 2 || !isIP(self.split('-')[0].trim()) || !isIP(self.split('-')[1].trim()) || ip(self.split('-')[0].trim()).family() == ip(self.split('-')[1].trim()).family()`,messageExpression=`"'" + self + "' mixes IPv4 and IPv6"`
	Addresses []string `json:"addresses"`

	// AutoAssign false keeps the pool for Services that ask for it by name
	// or ask for one of its addresses; such a pool is never picked on its
	// own. Defaults to true.
	// +optional
	// +kubebuilder:default=true
	AutoAssign *bool `json:"autoAssign,omitempty"`

	// AvoidBuggyIPs skips IPv4 addresses ending in .0 and .255, which some
	// old client stacks take for broadcast addresses. No effect on IPv6.
	// +optional
	// +kubebuilder:default=false
	AvoidBuggyIPs bool `json:"avoidBuggyIPs,omitempty"`

	// ServiceAllocation limits the pool to some Services and orders it
	// among the pools that may serve a Service. Unset: any Service, no
	// priority.
	// +optional
	ServiceAllocation *ServiceAllocation `json:"serviceAllocation,omitempty"`
}

// ServiceAllocation scopes a pool to Services and gives it a priority.
// Namespaces and NamespaceSelectors together select namespaces (a namespace
// in the list or matched by any selector); ServiceSelectors select Services
// by label (any selector). An empty scope selects everything.
type ServiceAllocation struct {
	// Priority orders the pools that may serve a Service: 1 is tried first,
	// then 2, and so on; equal priorities are tried by pool name. 0, the
	// default, means no priority: such pools are tried after every pool with
	// one, as in MetalLB.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Priority int32 `json:"priority,omitempty"`

	// Namespaces the pool serves, by name.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespaces []string `json:"namespaces,omitempty"`

	// NamespaceSelectors select the namespaces the pool serves by label.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	NamespaceSelectors []metav1.LabelSelector `json:"namespaceSelectors,omitempty"`

	// ServiceSelectors select the Services the pool serves by label.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	ServiceSelectors []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
}

// IPAddressPoolStatus is the observed state of an IPAddressPool, written by
// herald-ccm.
type IPAddressPoolStatus struct {
	// ObservedGeneration is the metadata.generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// IPv4 counts the pool's IPv4 addresses; unset when it has none.
	// +optional
	IPv4 *AddressCounts `json:"ipv4,omitempty"`

	// IPv6 counts the pool's IPv6 addresses; unset when it has none.
	// +optional
	IPv6 *AddressCounts `json:"ipv6,omitempty"`

	// Conditions: Ready (the pool is valid and in use by the allocator) and
	// Conflicting (some of its addresses are also in another pool).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// AddressCounts counts the addresses of one family in a pool.
//
// The counts are int64 that saturate at MaxCount (2^63-1) rather than
// decimal strings: a single IPv6 /64 already holds 2^64 addresses, but no
// one exhausts a pool that large one Service at a time, so above 2^63-1 the
// exact number carries no information, while numbers keep printer columns,
// `kubectl --sort-by`, metrics exporters and CEL comparisons working. InUse
// is exact in practice (it is bounded by the number of Services).
type AddressCounts struct {
	// Total is how many addresses the pool can hand out (without .0 and
	// .255 when avoidBuggyIPs is set, and without addresses shadowed by an
	// overlapping pool), saturated at 2^63-1.
	// +kubebuilder:validation:Minimum=0
	Total int64 `json:"total"`
	// InUse is how many of them are assigned to Services; an address
	// shared by several Services counts once.
	// +kubebuilder:validation:Minimum=0
	InUse int64 `json:"inUse"`
	// Free is Total minus InUse, computed before saturation.
	// +kubebuilder:validation:Minimum=0
	Free int64 `json:"free"`
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=hpool,categories=herald
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Addresses",type=string,JSONPath=`.spec.addresses`
// +kubebuilder:printcolumn:name="Auto Assign",type=boolean,JSONPath=`.spec.autoAssign`,priority=1
// +kubebuilder:printcolumn:name="Priority",type=integer,JSONPath=`.spec.serviceAllocation.priority`,priority=1
// +kubebuilder:printcolumn:name="IPv4 In Use",type=integer,JSONPath=`.status.ipv4.inUse`
// +kubebuilder:printcolumn:name="IPv4 Free",type=integer,JSONPath=`.status.ipv4.free`
// +kubebuilder:printcolumn:name="IPv6 In Use",type=integer,JSONPath=`.status.ipv6.inUse`
// +kubebuilder:printcolumn:name="IPv6 Free",type=integer,JSONPath=`.status.ipv6.free`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Conflicting",type=string,JSONPath=`.status.conditions[?(@.type=="Conflicting")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// IPAddressPool is a set of addresses herald hands out to Services of type
// LoadBalancer on bare metal. Cluster-scoped.
type IPAddressPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec IPAddressPoolSpec `json:"spec"`
	// +optional
	Status IPAddressPoolStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// IPAddressPoolList is a list of IPAddressPools.
type IPAddressPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPAddressPool `json:"items"`
}
