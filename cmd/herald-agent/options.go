package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/heraldlb/herald/provider/agent"
	"github.com/heraldlb/herald/provider/dataplane"
)

// Default listen addresses. They differ from kube-proxy's (10256, 10249) so
// that both can run on one node while a cluster moves from one to the other.
const (
	defaultHealthBindAddress  = "0.0.0.0:10276"
	defaultMetricsBindAddress = "127.0.0.1:10279"
)

// options are herald-agent's flags. Configuration comes from flags only.
type options struct {
	kubeconfig         string
	nodeName           string
	nodePortAddresses  []string
	clusterCIDRs       []string
	detectLocalMode    string
	podBridgeInterface string
	podInterfacePrefix string
	masqueradeAll      bool
	minSyncPeriod      time.Duration
	syncPeriod         time.Duration
	fullSyncPeriod     time.Duration
	burst              int
	cleanup            bool
	printVersion       bool
	healthBindAddress  string
	metricsBindAddress string
	profiling          bool
	memoryLimit        string
	gcPercent          int
	gcPercentSet       bool // --gc-percent given: it overrides GOGC
	forwarding         bool
	announce           announceOptions
}

func newFlagSet(o *options) *pflag.FlagSet {
	fs := pflag.NewFlagSet("herald-agent", pflag.ContinueOnError)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "Path to a kubeconfig file; empty means the in-cluster configuration.")
	fs.StringVar(&o.nodeName, "node-name", "", "Name of the Node this agent runs on (required; in a DaemonSet, from spec.nodeName).")
	fs.StringSliceVar(&o.nodePortAddresses, "nodeport-addresses", nil,
		"CIDRs of the node addresses that answer NodePorts and healthCheckNodePorts; empty means all node addresses.")
	fs.StringSliceVar(&o.clusterCIDRs, "cluster-cidr", nil,
		"The cluster's pod CIDRs, for --detect-local-mode=ClusterCIDR.")
	fs.StringVar(&o.detectLocalMode, "detect-local-mode", modeClusterCIDR,
		"How traffic from pods is told from the rest, as kube-proxy's: ClusterCIDR (source in --cluster-cidr), "+
			"NodeCIDR (source in the Node's spec.podCIDRs), BridgeInterface (enters through --pod-bridge-interface), "+
			"InterfaceNamePrefix (enters through an interface named --pod-interface-name-prefix*). Other ClusterIP traffic "+
			"is masqueraded so replies return through this node; pods reaching an externalTrafficPolicy Local "+
			"Service's external address get all its endpoints.")
	fs.StringVar(&o.podBridgeInterface, "pod-bridge-interface", "",
		"The bridge pods are attached to, for --detect-local-mode=BridgeInterface.")
	fs.StringVar(&o.podInterfacePrefix, "pod-interface-name-prefix", "",
		"The prefix of pods' host-side interface names, for --detect-local-mode=InterfaceNamePrefix.")
	fs.BoolVar(&o.masqueradeAll, "masquerade-all", false, "Masquerade all traffic to ClusterIPs.")
	fs.DurationVar(&o.minSyncPeriod, "min-sync-period", time.Second,
		"Minimum time between two syncs once --burst syncs have run back to back; 0 disables the limit.")
	fs.DurationVar(&o.syncPeriod, "sync-period", 30*time.Second, "Maximum time between two syncs.")
	fs.DurationVar(&o.fullSyncPeriod, "full-sync-period", agent.DefaultFullSyncPeriod,
		"How often a sync rewrites the whole table (this forgets ClientIP affinity choices).")
	fs.IntVar(&o.burst, "burst", 2, "Syncs that may run back to back before --min-sync-period applies.")
	fs.BoolVar(&o.cleanup, "cleanup", false, "Delete herald's nftables table and exit.")
	fs.BoolVar(&o.printVersion, "version", false, "Print the version and exit.")
	fs.StringVar(&o.healthBindAddress, "health-bind-address", defaultHealthBindAddress,
		"host:port serving /readyz, /livez and /healthz; empty disables.")
	fs.StringVar(&o.metricsBindAddress, "metrics-bind-address", defaultMetricsBindAddress,
		"host:port serving /metrics; empty disables. May equal --health-bind-address.")
	fs.BoolVar(&o.profiling, "profiling", false,
		"Serve Go's profiles (/debug/pprof/) on --metrics-bind-address, as kube-proxy's --profiling.")
	fs.StringVar(&o.memoryLimit, "memory-limit", memoryLimitAuto,
		"Soft limit on the Go runtime's memory (as GOMEMLIMIT), e.g. 100Mi: near it, garbage is collected more often "+
			"instead of the heap growing to twice the live data, which trades CPU for resident memory. "+
			"\"auto\" is 90% of the container's memory limit (cgroup memory.max) when it has one; 0 is none.")
	fs.IntVar(&o.gcPercent, "gc-percent", defaultGCPercent,
		"The Go garbage collector's target (as GOGC): the heap grows this many percent over the live data before "+
			"a collection. Lower saves resident memory for collector CPU. When not given, GOGC is obeyed if set.")
	fs.BoolVar(&o.forwarding, "forwarding", true,
		"Forward ClusterIP, NodePort and LoadBalancer traffic with nftables (replaces kube-proxy). "+
			"Turn off where kube-proxy forwards and herald-agent only announces.")
	o.announce.addFlags(fs)
	gofs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(gofs)
	fs.AddGoFlagSet(gofs)
	return fs
}

// validate checks the flags; each error names the flag at fault.
func (o *options) validate() error {
	if o.cleanup {
		return nil // --cleanup needs nothing else
	}
	var errs []error
	if !o.forwarding && !o.announce.any() {
		errs = append(errs, errors.New("--forwarding=false and no --announce: nothing to do"))
	}
	errs = append(errs, o.announce.validate()...)
	if o.nodeName == "" {
		errs = append(errs, errors.New("--node-name is required"))
	}
	if _, err := parseCIDRs("--nodeport-addresses", o.nodePortAddresses); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, o.validateLocalDetection()...)
	switch {
	case o.minSyncPeriod < 0:
		errs = append(errs, fmt.Errorf("--min-sync-period=%v must not be negative", o.minSyncPeriod))
	case o.syncPeriod <= 0:
		errs = append(errs, fmt.Errorf("--sync-period=%v must be positive", o.syncPeriod))
	case o.minSyncPeriod > o.syncPeriod:
		errs = append(errs, fmt.Errorf("--min-sync-period=%v must not exceed --sync-period=%v", o.minSyncPeriod, o.syncPeriod))
	}
	if o.fullSyncPeriod < o.syncPeriod {
		errs = append(errs, fmt.Errorf("--full-sync-period=%v must not be shorter than --sync-period=%v", o.fullSyncPeriod, o.syncPeriod))
	}
	if o.burst < 1 {
		errs = append(errs, fmt.Errorf("--burst=%d must be at least 1", o.burst))
	}
	if _, err := parseMemoryLimit(o.memoryLimit); err != nil {
		errs = append(errs, err)
	}
	if o.gcPercent < 1 {
		errs = append(errs, fmt.Errorf("--gc-percent=%d must be at least 1", o.gcPercent))
	}
	if o.profiling && o.metricsBindAddress == "" {
		errs = append(errs, errors.New("--profiling needs --metrics-bind-address"))
	}
	for _, b := range [...]struct{ flag, addr string }{
		{"--health-bind-address", o.healthBindAddress}, {"--metrics-bind-address", o.metricsBindAddress},
	} {
		if err := checkBindAddress(b.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", b.flag, b.addr, err))
		}
	}
	return errors.Join(errs...)
}

func parseCIDRs(flagName string, in []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(in))
	for _, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a CIDR: %w", flagName, s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// checkBindAddress accepts "" (disabled) or host:port with an IP or empty host.
func checkBindAddress(addr string) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("host %q is not an IP address", host)
		}
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("port %q must be in 1-65535", port)
	}
	return nil
}

// agentConfig turns validated flags into the agent's configuration.
func (o *options) agentConfig() agent.Config {
	// validate has parsed these already
	nodePorts, _ := parseCIDRs("--nodeport-addresses", o.nodePortAddresses)
	local, fromNode := o.localDetector()
	return agent.Config{
		NodeName: o.nodeName,
		Dataplane: dataplane.Options{
			NodePortCIDRs: nodePorts,
			Local:         local,
			MasqueradeAll: o.masqueradeAll,
		},
		LocalFromNode:  fromNode,
		MinSyncPeriod:  o.minSyncPeriod,
		SyncPeriod:     o.syncPeriod,
		FullSyncPeriod: o.fullSyncPeriod,
		Burst:          o.burst,
	}
}
