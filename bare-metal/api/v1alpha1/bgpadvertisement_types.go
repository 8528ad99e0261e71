package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BGPAdvertisementSpec says which addresses are advertised over BGP, to
// which peers, from which nodes and with which attributes. As in MetalLB, a
// pool that no BGPAdvertisement selects is not advertised at all. Every
// eligible node advertises (the router spreads traffic over them, ECMP);
// with externalTrafficPolicy Local, only nodes with a ready endpoint do.
type BGPAdvertisementSpec struct {
	// IPAddressPools names the pools whose addresses are advertised: pools
	// of herald-ccm's cloud config or IPAddressPool objects. With
	// ipAddressPoolSelectors, a pool named here or matched by a selector is
	// advertised; with neither, every pool is.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	IPAddressPools []string `json:"ipAddressPools,omitempty"`

	// IPAddressPoolSelectors select IPAddressPool objects by label (any
	// selector).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	IPAddressPoolSelectors []metav1.LabelSelector `json:"ipAddressPoolSelectors,omitempty"`

	// AggregationLength is the prefix length IPv4 addresses are advertised
	// with: 32 advertises each address alone; shorter advertises the
	// covering prefix once for every address in it (fewer routes, but the
	// router then sends the whole prefix to every node that advertises any
	// address in it). Default 32.
	// +optional
	// +kubebuilder:default=32
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=32
	AggregationLength *int32 `json:"aggregationLength,omitempty"`

	// AggregationLengthV6 is aggregationLength for IPv6. Default 128.
	// +optional
	// +kubebuilder:default=128
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	AggregationLengthV6 *int32 `json:"aggregationLengthV6,omitempty"`

	// Communities are added to the routes (RFC 1997): "ASN:value" with
	// both halves 0-65535, or one of no-export, no-advertise, local-as,
	// no-peer.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=20
	// +kubebuilder:validation:items:XValidation:rule=`self in ['no-export', 'no-advertise', 'local-as', 'no-peer'] || (self.matches('^[0-9]{1,5}:[0-9]{1,5}$') && int(self.split(':')[0]) <= 65535 && int(self.split(':')[1]) <= 65535)`,messageExpression=`"'" + self + "' is not a community: ASN:value with both in 0-65535, or no-export, no-advertise, local-as, no-peer"`
	Communities []string `json:"communities,omitempty"`

	// LargeCommunities are added to the routes (RFC 8092):
	// "global:local1:local2", each 0-4294967295.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=32
	// +kubebuilder:validation:items:XValidation:rule=`self.matches('^[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$') && self.split(':').all(p, int(p) <= 4294967295)`,messageExpression=`"'" + self + "' is not a large community: three numbers in 0-4294967295 joined by ':'"`
	LargeCommunities []string `json:"largeCommunities,omitempty"`

	// LocalPref sets the LOCAL_PREF attribute on routes to iBGP peers
	// (eBGP peers never receive it). Unset: 100, the default.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	LocalPref *int64 `json:"localPref,omitempty"`

	// Peers names the BGPPeers the routes go to. Empty: every peer.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Peers []string `json:"peers,omitempty"`

	// NodeSelectors limit the nodes that advertise (any selector). Empty:
	// every node with a session to the peer. Whatever they select, a node
	// that is not Ready, is cordoned, is tainted
	// node.kubernetes.io/out-of-service or labelled
	// node.kubernetes.io/exclude-from-external-load-balancers never
	// advertises.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	NodeSelectors []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
}

// BGPAdvertisementStatus is the observed state of a BGPAdvertisement.
type BGPAdvertisementStatus struct {
	// Conditions: Valid (False with a reason when herald-agent cannot use
	// the spec, e.g. a selector with an unknown operator).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=bgpadv,categories=herald
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Pools",type=string,JSONPath=`.spec.ipAddressPools`
// +kubebuilder:printcolumn:name="Peers",type=string,JSONPath=`.spec.peers`
// +kubebuilder:printcolumn:name="Communities",type=string,JSONPath=`.spec.communities`,priority=1
// +kubebuilder:printcolumn:name="Local Pref",type=integer,JSONPath=`.spec.localPref`,priority=1
// +kubebuilder:printcolumn:name="Aggregation",type=integer,JSONPath=`.spec.aggregationLength`,priority=1
// +kubebuilder:printcolumn:name="Node Selectors",type=string,JSONPath=`.spec.nodeSelectors`,priority=1
// +kubebuilder:printcolumn:name="Valid",type=string,JSONPath=`.status.conditions[?(@.type=="Valid")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// BGPAdvertisement advertises the addresses of some pools over BGP.
// Cluster-scoped.
type BGPAdvertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	// +kubebuilder:default={}
	Spec BGPAdvertisementSpec `json:"spec,omitempty"`
	// +optional
	Status BGPAdvertisementStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// BGPAdvertisementList is a list of BGPAdvertisements.
type BGPAdvertisementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPAdvertisement `json:"items"`
}
