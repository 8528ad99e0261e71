package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BGPPeerSpec is a BGP session that herald-agent opens from every node the
// peer selects to a router. Durations are Go durations ("90s", "300ms").
// What CEL cannot check (a label selector's operator, the password Secret)
// herald-agent checks and reports in status.conditions.
//
// +kubebuilder:validation:XValidation:rule=`!has(self.sourceAddress) || ip(self.sourceAddress).family() == ip(self.peerAddress).family()`,message="sourceAddress must be of the same IP family as peerAddress"
// +kubebuilder:validation:XValidation:rule=`!has(self.ebgpMultiHop) || !self.ebgpMultiHop || self.localASN != self.peerASN`,message="ebgpMultiHop applies to eBGP sessions only: localASN equals peerASN"
// +kubebuilder:validation:XValidation:rule=`!has(self.keepaliveTime) || (has(self.holdTime) ? duration(self.keepaliveTime) < duration(self.holdTime) : duration(self.keepaliveTime) < duration('90s'))`,message="keepaliveTime must be shorter than holdTime (default 90s)"
type BGPPeerSpec struct {
	// PeerAddress is the router's address, IPv4 or IPv6. IPv4 and IPv6
	// service addresses are both advertised over the one session
	// (multiprotocol BGP) when the router accepts both families.
	// +required
	// +kubebuilder:validation:MinLength=2
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule=`isIP(self) && !self.contains('%')`,message="must be an IPv4 or IPv6 address without a zone"
	PeerAddress string `json:"peerAddress"`

	// PeerASN is the router's AS number; equal to localASN for iBGP.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	PeerASN int64 `json:"peerASN"`

	// LocalASN is the nodes' AS number on this session.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	LocalASN int64 `json:"localASN"`

	// PeerPort is the router's TCP port.
	// +optional
	// +kubebuilder:default=179
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	PeerPort int32 `json:"peerPort,omitempty"`

	// HoldTime is the BGP hold time proposed to the router, in whole
	// seconds: without BFD, a dead node's routes go after at most this
	// long. 3s-65535s; default 90s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule=`self.matches('^([0-9]+h)?([0-9]+m)?([0-9]+s)?$') && self != '' && duration(self) >= duration('3s') && duration(self) <= duration('65535s')`,message="must be whole seconds (such as 90s or 1m30s) between 3s and 65535s"
	HoldTime *metav1.Duration `json:"holdTime,omitempty"`

	// KeepaliveTime is the interval between keepalives, in whole seconds;
	// default a third of the hold time.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule=`self.matches('^([0-9]+h)?([0-9]+m)?([0-9]+s)?$') && self != '' && duration(self) >= duration('1s') && duration(self) <= duration('21845s')`,message="must be whole seconds (such as 30s) between 1s and 21845s"
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`

	// PasswordSecret enables TCP MD5 authentication (RFC 2385) with the
	// password in a Secret in herald-agent's namespace. herald-agent may
	// read only the Secrets the chart lists in agent.bgp.passwordSecrets.
	// +optional
	PasswordSecret *SecretKeySelector `json:"passwordSecret,omitempty"`

	// EBGPMultiHop lets an eBGP session cross routers (TTL 255) instead of
	// requiring the router on the node's own link.
	// +optional
	EBGPMultiHop bool `json:"ebgpMultiHop,omitempty"`

	// SourceAddress is the node address the session starts from. Only
	// nodes holding it open the session (it names one node's address);
	// empty: the address of the interface the route to the router leaves
	// by, which is also the next hop the router gets.
	// +optional
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule=`isIP(self) && !self.contains('%')`,message="must be an IPv4 or IPv6 address without a zone"
	SourceAddress string `json:"sourceAddress,omitempty"`

	// BFD, when set, runs Bidirectional Forwarding Detection (RFC 5880,
	// single hop) on the session, so the router drops a dead node's routes
	// in a fraction of a second instead of after the hold time. The router
	// must run BFD for the node addresses too.
	// +optional
	BFD *BFDProfile `json:"bfd,omitempty"`

	// GracefulRestart, when set, advertises the graceful restart capability
	// (RFC 4724): when herald-agent dies without a chance to withdraw (a
	// crash, SIGKILL), a router that supports it keeps the node's routes
	// for restartTime while the node's data plane keeps forwarding, instead
	// of dropping them at once. A node that is really gone keeps its
	// routes that long too unless BFD tears the session down.
	// +optional
	GracefulRestart *GracefulRestart `json:"gracefulRestart,omitempty"`

	// NodeSelectors limit the nodes that open this session (any selector).
	// Empty: every node running herald-agent with BGP on.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	NodeSelectors []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
}

// SecretKeySelector names a key of a Secret in herald-agent's namespace.
type SecretKeySelector struct {
	// Name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Name string `json:"name"`
	// Key in the Secret's data holding the password.
	// +optional
	// +kubebuilder:default=password
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// BFDProfile are the BFD timers of a session. The detection time, how long
// the router waits before declaring a silent node dead, is the slower of
// the two sides' intervals times the router's multiplier.
type BFDProfile struct {
	// ReceiveInterval is the shortest interval between BFD packets this
	// node accepts. Default 300ms.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule=`self.matches('^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('10ms') && duration(self) <= duration('60s')`,message="must be a duration (such as 300ms) between 10ms and 60s"
	ReceiveInterval *metav1.Duration `json:"receiveInterval,omitempty"`
	// TransmitInterval is the interval at which this node sends BFD
	// packets. Default 300ms.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule=`self.matches('^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('10ms') && duration(self) <= duration('60s')`,message="must be a duration (such as 300ms) between 10ms and 60s"
	TransmitInterval *metav1.Duration `json:"transmitInterval,omitempty"`
	// DetectMultiplier is how many packets in a row this node may miss
	// before it declares the router dead. Default 3.
	// +optional
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=255
	DetectMultiplier int32 `json:"detectMultiplier,omitempty"`
}

// GracefulRestart configures the graceful restart capability.
type GracefulRestart struct {
	// RestartTime is how long the router keeps a restarting node's routes.
	// Default 120s; at most 4095s (the capability's 12 bits).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule=`self.matches('^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1s') && duration(self) <= duration('4095s')`,message="must be a duration (such as 120s) between 1s and 4095s"
	RestartTime *metav1.Duration `json:"restartTime,omitempty"`
}

// Session states of BGPPeerNodeStatus.SessionState: the BGP finite state
// machine's (RFC 4271), and NotConfigured for a node that cannot open the
// session (status.nodes[].message says why).
const (
	SessionIdle          = "Idle"
	SessionConnect       = "Connect"
	SessionActive        = "Active"
	SessionOpenSent      = "OpenSent"
	SessionOpenConfirm   = "OpenConfirm"
	SessionEstablished   = "Established"
	SessionNotConfigured = "NotConfigured"
)

// BGPPeerNodeStatus is one node's session with the peer.
type BGPPeerNodeStatus struct {
	// Node is the Node's name.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node"`
	// SessionState is the BGP session's state on this node.
	// +required
	// +kubebuilder:validation:Enum=Idle;Connect;Active;OpenSent;OpenConfirm;Established;NotConfigured
	SessionState string `json:"sessionState"`
	// BFDState is the BFD session's state; empty without BFD.
	// +optional
	// +kubebuilder:validation:Enum=Up;Down;Init;AdminDown
	BFDState string `json:"bfdState,omitempty"`
	// AdvertisedPrefixes is how many prefixes this node advertises to the
	// peer.
	// +optional
	// +kubebuilder:validation:Minimum=0
	AdvertisedPrefixes int32 `json:"advertisedPrefixes,omitempty"`
	// LastTransitionTime is when SessionState last changed.
	// +optional
	LastTransitionTime metav1.Time `json:"lastTransitionTime,omitempty"`
	// Message says why a node cannot open the session, or why it went
	// down.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// BGPPeerStatus is the observed state of a BGPPeer: each node writes its own
// entry of nodes (server-side apply, one field manager per node).
type BGPPeerStatus struct {
	// Conditions: Valid (False with a reason when herald-agent cannot use
	// the spec, e.g. the password Secret is missing).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Nodes are the sessions of the nodes the peer selects, one entry per
	// node. 5000 entries of ~200 bytes stay well under etcd's object size
	// limit.
	// +optional
	// +listType=map
	// +listMapKey=node
	// +kubebuilder:validation:MaxItems=5000
	Nodes []BGPPeerNodeStatus `json:"nodes,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=bgppeer,categories=herald
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.peerAddress`
// +kubebuilder:printcolumn:name="Peer ASN",type=integer,JSONPath=`.spec.peerASN`
// +kubebuilder:printcolumn:name="Local ASN",type=integer,JSONPath=`.spec.localASN`
// +kubebuilder:printcolumn:name="Port",type=integer,JSONPath=`.spec.peerPort`,priority=1
// +kubebuilder:printcolumn:name="Hold Time",type=string,JSONPath=`.spec.holdTime`,priority=1
// +kubebuilder:printcolumn:name="BFD Interval",type=string,JSONPath=`.spec.bfd.transmitInterval`,priority=1
// +kubebuilder:printcolumn:name="Node Selectors",type=string,JSONPath=`.spec.nodeSelectors`,priority=1
// +kubebuilder:printcolumn:name="Valid",type=string,JSONPath=`.status.conditions[?(@.type=="Valid")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// BGPPeer is a router that herald-agent advertises LoadBalancer addresses
// to, from every node it selects. Which addresses: BGPAdvertisement.
// Cluster-scoped.
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec BGPPeerSpec `json:"spec"`
	// +optional
	Status BGPPeerStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// BGPPeerList is a list of BGPPeers.
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPPeer `json:"items"`
}
