package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// L2AdvertisementSpec says which addresses are announced on the local
// network with ARP (IPv4) and NDP (IPv6), from which nodes and on which of
// their interfaces. As in MetalLB, a pool that no L2Advertisement selects
// is not announced by Layer 2 at all.
type L2AdvertisementSpec struct {
	// IPAddressPools names the pools whose addresses are announced: pools of
	// herald-ccm's cloud config or IPAddressPool objects. With
	// ipAddressPoolSelectors, a pool named here or matched by a selector is
	// announced; with neither, every pool is.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	IPAddressPools []string `json:"ipAddressPools,omitempty"`

	// IPAddressPoolSelectors select IPAddressPool objects by label (any
	// selector). Pools of the cloud config have no labels: name them in
	// ipAddressPools instead.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	IPAddressPoolSelectors []metav1.LabelSelector `json:"ipAddressPoolSelectors,omitempty"`

	// NodeSelectors limit the nodes that may announce the addresses (any
	// selector). Empty: every node running herald-agent with Layer 2
	// announcing on. Whatever they select, a node that is not Ready, is
	// cordoned, is tainted node.kubernetes.io/out-of-service or labelled
	// node.kubernetes.io/exclude-from-external-load-balancers never
	// announces.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	NodeSelectors []metav1.LabelSelector `json:"nodeSelectors,omitempty"`

	// Interfaces are the network interfaces the addresses are announced on,
	// by name (e.g. eth0, bond0.100); a selected node without any of them
	// announces nothing for these pools. Empty: on each node, the interface
	// holding a node address in the same subnet as the VIP, else the one
	// with the default route of the VIP's family.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=15
	// +kubebuilder:validation:items:XValidation:rule=`self != '.' && self != '..' && !self.matches('[/:\\s]')`,messageExpression=`"'" + self + "' is not a Linux interface name (no '/', ':' or spaces, not '.' or '..')"`
	Interfaces []string `json:"interfaces,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=l2adv,categories=herald
// +kubebuilder:printcolumn:name="Pools",type=string,JSONPath=`.spec.ipAddressPools`
// +kubebuilder:printcolumn:name="Pool Selectors",type=string,JSONPath=`.spec.ipAddressPoolSelectors`,priority=1
// +kubebuilder:printcolumn:name="Node Selectors",type=string,JSONPath=`.spec.nodeSelectors`,priority=1
// +kubebuilder:printcolumn:name="Interfaces",type=string,JSONPath=`.spec.interfaces`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// L2Advertisement announces the addresses of some pools with ARP and NDP
// from one node at a time per address. Which node: see the Service
// condition herald.dev/Announced. Cluster-scoped.
type L2Advertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec L2AdvertisementSpec `json:"spec,omitempty"`
}

// +kubebuilder:object:root=true

// L2AdvertisementList is a list of L2Advertisements.
type L2AdvertisementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []L2Advertisement `json:"items"`
}
