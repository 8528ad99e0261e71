package main

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/bare-metal/election/membership"
	"github.com/heraldlb/herald/bare-metal/layer2"
	"github.com/heraldlb/herald/bare-metal/speaker"
)

// newSpeaker wires the Layer 2 speaker: the membership on this node's
// address, the ARP/NDP announcer gated by the fence, and an event recorder.
func newSpeaker(ctx context.Context, o *options, cfg *rest.Config, client kubernetes.Interface,
	shared informers.SharedInformerFactory, reg prometheus.Registerer) (*speaker.Speaker, error) {
	logger := klog.FromContext(ctx)
	mcfg := o.announce.membershipConfig()
	mcfg.NodeName = o.nodeName
	addr, err := advertiseAddress(ctx, client, o)
	if err != nil {
		return nil, err
	}
	mcfg.AdvertiseAddr = addr
	if o.announce.secretFile != "" {
		if mcfg.SecretKey, err = readSecret(o.announce.secretFile); err != nil {
			return nil, err
		}
	} else {
		logger.Info("No --memberlist-secret-file: the agents' membership traffic is neither encrypted nor authenticated")
	}
	mcfg.LogOutput = &membership.LogWriter{Logger: logger.WithName("memberlist")}

	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartStructuredLogging(3)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "herald-agent", Host: o.nodeName})

	return speaker.New(o.announce.speakerConfig(o.nodeName), speaker.Deps{
		Client: client, Dynamic: dyn, Informers: shared,
		StartMembership: func(onChange func(), onMessage func(string, []byte)) (speaker.Membership, error) {
			c := mcfg
			c.OnChange, c.OnMessage = onChange, onMessage
			return membership.Start(c)
		},
		NewL2: func(gate func() bool) (speaker.Announcer, error) {
			return layer2.New(layer2.Options{Gate: gate, Registerer: reg, Logger: logger.WithName("layer2")})
		},
		Interfaces: speaker.HostInterfaces{},
		Recorder:   recorder,
		Registerer: reg,
	})
}

// advertiseAddress is --memberlist-advertise-address, else the Node's first
// InternalIP: the address the other agents know this node by.
func advertiseAddress(ctx context.Context, client kubernetes.Interface, o *options) (netip.Addr, error) {
	if o.announce.advertise != "" {
		return netip.ParseAddr(o.announce.advertise) // validated with the flags
	}
	node, err := client.CoreV1().Nodes().Get(ctx, o.nodeName, metav1.GetOptions{})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("reading Node %s for its address: %w", o.nodeName, err)
	}
	if ip, ok := speaker.NodeAddress(node); ok {
		return ip, nil
	}
	return netip.Addr{}, fmt.Errorf("node %s: %w", o.nodeName, errNoNodeAddress)
}
