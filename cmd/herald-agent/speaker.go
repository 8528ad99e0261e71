package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/bgp"
	"github.com/heraldlb/herald/bare-metal/bgp/gobgp"
	"github.com/heraldlb/herald/bare-metal/election/membership"
	"github.com/heraldlb/herald/bare-metal/layer2"
	"github.com/heraldlb/herald/bare-metal/speaker"
	"github.com/heraldlb/herald/internal/kubeclient"
	"github.com/heraldlb/herald/provider/agent"
)

// newSpeaker wires the announcing protocols that are on: for Layer 2 the
// membership on this node's address and the ARP/NDP announcer gated by the
// fence; for BGP the embedded GoBGP speaker; and an event recorder.
func newSpeaker(ctx context.Context, o *options, cfg *rest.Config, client *kubeclient.Client,
	shared *kubeclient.Informers, reg prometheus.Registerer, recorder record.EventRecorder) (*speaker.Speaker, error) {
	logger := klog.FromContext(ctx)
	node, err := client.Node(ctx, o.nodeName)
	if err != nil {
		return nil, fmt.Errorf("reading Node %s for its addresses: %w", o.nodeName, err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	deps := speaker.Deps{Source: client, Dynamic: dyn, Informers: shared, Services: agent.NewSpeakerCache(shared),
		Recorder: recorder, Registerer: reg}

	if o.announce.layer2() {
		mcfg, err := membershipConfig(ctx, o, node)
		if err != nil {
			return nil, err
		}
		deps.StartMembership = func(onChange func(), onMessage func(string, []byte)) (speaker.Membership, error) {
			c := mcfg
			c.OnChange, c.OnMessage = onChange, onMessage
			return membership.Start(c)
		}
		deps.NewL2 = func(gate func() bool) (speaker.Announcer, error) {
			return layer2.New(layer2.Options{Gate: gate, Registerer: reg, Logger: logger.WithName("layer2")})
		}
		deps.Interfaces = speaker.HostInterfaces{}
	}
	if o.announce.bgpOn() {
		id, err := routerID(o, node)
		if err != nil {
			return nil, err
		}
		deps.Host = speaker.HostInterfaces{}
		deps.NewBGP = func(onEvent func(bgp.PeerEvent)) (bgp.Router, error) {
			return gobgp.New(ctx, gobgp.Options{RouterID: id, ListenPort: int32(o.announce.bgp.listenPort), //nolint:gosec // validated 0-65535
				Logger: logger.WithName("gobgp"), OnPeerEvent: onEvent})
		}
	}
	return speaker.New(o.announce.speakerConfig(o.nodeName), deps)
}

// membershipConfig is the membership on --memberlist-advertise-address, else
// the Node's first InternalIP: the address the other agents know this node
// by.
func membershipConfig(ctx context.Context, o *options, node *v1.Node) (membership.Config, error) {
	mcfg := o.announce.membershipConfig()
	mcfg.NodeName = o.nodeName
	if o.announce.advertise != "" {
		mcfg.AdvertiseAddr, _ = netip.ParseAddr(o.announce.advertise) // validated with the flags
	} else if ip, ok := speaker.NodeAddress(node); ok {
		mcfg.AdvertiseAddr = ip
	} else {
		return membership.Config{}, fmt.Errorf("node %s: %w", o.nodeName, errNoNodeAddress)
	}
	if o.announce.secretFile != "" {
		key, err := readSecret(o.announce.secretFile)
		if err != nil {
			return membership.Config{}, err
		}
		mcfg.SecretKey = key
	} else {
		klog.FromContext(ctx).Info("No --memberlist-secret-file: the agents' membership traffic is neither encrypted nor authenticated")
	}
	mcfg.LogOutput = &membership.LogWriter{Logger: klog.FromContext(ctx).WithName("memberlist")}
	return mcfg, nil
}

var errNoRouterID = errors.New("the Node has no IPv4 InternalIP; set --bgp-router-id")

// routerID is --bgp-router-id, else the Node's first IPv4 InternalIP.
func routerID(o *options, node *v1.Node) (netip.Addr, error) {
	if o.announce.bgp.routerID != "" {
		return netip.ParseAddr(o.announce.bgp.routerID) // validated with the flags
	}
	for _, a := range node.Status.Addresses {
		if ip, err := netip.ParseAddr(a.Address); err == nil && a.Type == v1.NodeInternalIP && ip.Is4() {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("node %s: %w", o.nodeName, errNoRouterID)
}
