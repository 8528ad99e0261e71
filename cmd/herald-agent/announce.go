package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/heraldlb/herald/bare-metal/election"
	"github.com/heraldlb/herald/bare-metal/election/membership"
	"github.com/heraldlb/herald/bare-metal/speaker"
)

// The --announce values.
const (
	protocolLayer2 = "layer2"
	protocolBGP    = "bgp"
)

// announceOptions are the flags of the announcing half of the agent.
type announceOptions struct {
	protocols      []string
	classOnly      bool
	memberPort     int
	bindAddress    string
	advertise      string
	secretFile     string
	probeInterval  time.Duration
	probeTimeout   time.Duration
	suspicionMult  int
	fenceSilence   time.Duration
	fenceSettle    time.Duration
	releaseTimeout time.Duration
	drainTimeout   time.Duration
	bgp            bgpOptions
}

// bgpOptions are the flags of BGP announcing; sessions and routes come from
// BGPPeer and BGPAdvertisement objects.
type bgpOptions struct {
	routerID        string
	listenPort      int
	convergeWait    time.Duration
	secretNamespace string
	secretRefresh   time.Duration
}

func (a *announceOptions) addFlags(fs *pflag.FlagSet) {
	def := membership.DefaultConfig()
	fs.StringSliceVar(&a.protocols, "announce", nil,
		"Announce the LoadBalancer addresses of herald's pools: \"layer2\" answers ARP/NDP for them from one node at a time "+
			"(L2Advertisement objects say which pools, nodes and interfaces); \"bgp\" advertises them to routers from every "+
			"eligible node (BGPPeer and BGPAdvertisement objects). Both may be on (--announce=layer2,bgp). Empty: announce nothing.")
	fs.BoolVar(&a.classOnly, "load-balancer-class-only", false,
		"Announce only Services with spec.loadBalancerClass herald.dev/bare-metal (as herald-ccm's flag of the same name).")
	fs.IntVar(&a.memberPort, "memberlist-port", membership.DefaultPort, "UDP and TCP port the agents probe each other on, the same on every node.")
	fs.StringVar(&a.bindAddress, "memberlist-bind-address", "", "Address to listen on for the agents' membership; empty: all.")
	fs.StringVar(&a.advertise, "memberlist-advertise-address", "",
		"Address the other agents reach this one at; empty: the Node's first InternalIP.")
	fs.StringVar(&a.secretFile, "memberlist-secret-file", "",
		"File holding the key (16, 24 or 32 bytes) that encrypts and authenticates the agents' membership traffic; "+
			"without it, anyone on the network can join and vote.")
	fs.DurationVar(&a.probeInterval, "memberlist-probe-interval", def.ProbeInterval, "How often each agent probes another.")
	fs.DurationVar(&a.probeTimeout, "memberlist-probe-timeout", def.ProbeTimeout, "How long a probe waits for its ack before asking others.")
	fs.IntVar(&a.suspicionMult, "memberlist-suspicion-mult", def.SuspicionMult,
		"A suspected agent is declared dead after this many probe intervals (at least).")
	fs.DurationVar(&a.fenceSilence, "l2-fence-silence-timeout", 0,
		"A node that has heard nothing from the other agents for this long stops answering ARP/NDP, before they may take "+
			"its addresses over; 0: 2.5 probe intervals.")
	fs.DurationVar(&a.fenceSettle, "l2-fence-settle", time.Second,
		"After being fenced, how long a node waits once it reaches its peers again before it announces.")
	fs.DurationVar(&a.releaseTimeout, "l2-release-timeout", speaker.DefaultReleaseTimeout,
		"How long a node that hands an address over keeps answering while it waits for the new owner's takeover notice.")
	fs.DurationVar(&a.drainTimeout, "drain-timeout", speaker.DefaultDrainTimeout,
		"On SIGTERM, how long to wait for other nodes to take every announced address over (Layer 2) and for the routers "+
			"to act on the withdrawals (BGP) before exiting.")
	fs.StringVar(&a.bgp.routerID, "bgp-router-id", "", "BGP identifier (an IPv4 address); empty: the Node's first IPv4 InternalIP.")
	fs.IntVar(&a.bgp.listenPort, "bgp-listen-port", 0,
		"Accept BGP sessions on this TCP port (179 for routers that only wait for connections); 0: listen nowhere, "+
			"every session is opened by the node.")
	fs.DurationVar(&a.bgp.convergeWait, "bgp-converge-wait", speaker.DefaultConvergeWait,
		"On SIGTERM, how long the node keeps its BGP sessions (and forwards) after withdrawing its routes, so that the routers "+
			"move the traffic to other nodes first. Must be shorter than --drain-timeout.")
	fs.StringVar(&a.bgp.secretNamespace, "bgp-secret-namespace", "kube-system",
		"Namespace of the Secrets holding BGPPeer passwords (herald-agent's own).")
	fs.DurationVar(&a.bgp.secretRefresh, "bgp-secret-refresh", speaker.DefaultSecretRefresh,
		"How often BGPPeer password Secrets are read again (herald-agent may get them, not watch them).")
}

func (a *announceOptions) layer2() bool { return slices.Contains(a.protocols, protocolLayer2) }
func (a *announceOptions) bgpOn() bool  { return slices.Contains(a.protocols, protocolBGP) }
func (a *announceOptions) any() bool    { return a.layer2() || a.bgpOn() }

func (a *announceOptions) validate() []error {
	var errs []error
	for _, p := range a.protocols {
		if p != protocolLayer2 && p != protocolBGP {
			errs = append(errs, fmt.Errorf("--announce=%q: want %q or %q", p, protocolLayer2, protocolBGP))
		}
	}
	if a.any() && a.drainTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--drain-timeout=%v must be positive", a.drainTimeout))
	}
	if a.bgpOn() {
		errs = append(errs, a.bgp.validate(a.drainTimeout)...)
	}
	if !a.layer2() {
		return errs
	}
	for _, f := range []struct{ flag, value string }{{"--memberlist-bind-address", a.bindAddress}, {"--memberlist-advertise-address", a.advertise}} {
		if f.value != "" {
			if _, err := netip.ParseAddr(f.value); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q is not an IP address", f.flag, f.value))
			}
		}
	}
	if a.secretFile != "" {
		if _, err := readSecret(a.secretFile); err != nil {
			errs = append(errs, err)
		}
	}
	cfg := a.membershipConfig()
	cfg.NodeName, cfg.AdvertiseAddr = "validate", netip.IPv4Unspecified() // checked elsewhere
	if err := cfg.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--memberlist-*: %w", err))
	}
	if err := a.fenceConfig().Validate(a.probeInterval, cfg.DeadAfter()); err != nil {
		errs = append(errs, fmt.Errorf("--l2-fence-silence-timeout: %w", err))
	}
	if a.releaseTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--l2-release-timeout=%v must be positive", a.releaseTimeout))
	}
	return errs
}

func (b *bgpOptions) validate(drainTimeout time.Duration) []error {
	var errs []error
	if b.routerID != "" {
		if id, err := netip.ParseAddr(b.routerID); err != nil || !id.Is4() {
			errs = append(errs, fmt.Errorf("--bgp-router-id=%q is not an IPv4 address", b.routerID))
		}
	}
	if b.listenPort < 0 || b.listenPort > 65535 {
		errs = append(errs, fmt.Errorf("--bgp-listen-port=%d must be in 0-65535", b.listenPort))
	}
	if b.convergeWait <= 0 || b.convergeWait >= drainTimeout {
		errs = append(errs, fmt.Errorf("--bgp-converge-wait=%v must be positive and shorter than --drain-timeout=%v", b.convergeWait, drainTimeout))
	}
	if b.secretNamespace == "" {
		errs = append(errs, errors.New("--bgp-secret-namespace must not be empty"))
	}
	if b.secretRefresh <= 0 {
		errs = append(errs, fmt.Errorf("--bgp-secret-refresh=%v must be positive", b.secretRefresh))
	}
	return errs
}

// readSecret reads the membership key, trimming a trailing newline that
// editors and `kubectl create secret --from-file` leave in.
func readSecret(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--memberlist-secret-file: %w", err)
	}
	key := []byte(strings.TrimRight(string(data), "\r\n"))
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("--memberlist-secret-file=%s: the key has %d bytes; want 16, 24 or 32", path, len(key))
}

func (a *announceOptions) membershipConfig() membership.Config {
	cfg := membership.DefaultConfig()
	cfg.Port = a.memberPort
	cfg.ProbeInterval, cfg.ProbeTimeout, cfg.SuspicionMult = a.probeInterval, a.probeTimeout, a.suspicionMult
	if a.bindAddress != "" {
		cfg.BindAddr, _ = netip.ParseAddr(a.bindAddress)
	}
	return cfg
}

func (a *announceOptions) fenceConfig() election.FenceConfig {
	silence := a.fenceSilence
	if silence == 0 {
		silence = a.probeInterval * 5 / 2
	}
	return election.FenceConfig{SilenceTimeout: silence, Settle: a.fenceSettle}
}

func (a *announceOptions) speakerConfig(node string) speaker.Config {
	return speaker.Config{NodeName: node, ClassOnly: a.classOnly, Fence: a.fenceConfig(),
		ReleaseTimeout: a.releaseTimeout, DrainTimeout: a.drainTimeout,
		ConvergeWait: a.bgp.convergeWait, SecretNamespace: a.bgp.secretNamespace, SecretRefresh: a.bgp.secretRefresh}
}

var errNoNodeAddress = errors.New("the Node has no InternalIP; set --memberlist-advertise-address")
