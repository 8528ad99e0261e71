package main

import (
	"fmt"

	"github.com/heraldlb/herald/provider/dataplane"
)

// --detect-local-mode values, spelt as kube-proxy's.
const (
	modeClusterCIDR         = "ClusterCIDR"
	modeNodeCIDR            = "NodeCIDR"
	modeBridgeInterface     = "BridgeInterface"
	modeInterfaceNamePrefix = "InterfaceNamePrefix"
)

// validateLocalDetection checks --detect-local-mode and the flags it reads.
// An interface flag that only another mode reads is refused rather than
// ignored: it says the operator meant something this mode will not do.
// --cluster-cidr is let through in every mode, as kube-proxy does, since
// cluster-wide configuration carries it whatever the mode.
func (o *options) validateLocalDetection() []error {
	var errs []error
	if _, err := parseCIDRs("--cluster-cidr", o.clusterCIDRs); err != nil {
		errs = append(errs, err)
	}
	mode := o.detectLocalMode
	for _, f := range [...]struct {
		name string
		set  bool
		mode string
	}{
		{"--pod-bridge-interface", o.podBridgeInterface != "", modeBridgeInterface},
		{"--pod-interface-name-prefix", o.podInterfacePrefix != "", modeInterfaceNamePrefix},
	} {
		if f.set && mode != f.mode {
			errs = append(errs, fmt.Errorf("%s is read only with --detect-local-mode=%s, not %s", f.name, f.mode, mode))
		}
	}
	needs := func(flagName, value string) {
		if value == "" {
			errs = append(errs, fmt.Errorf("--detect-local-mode=%s needs %s", mode, flagName))
		} else if err := dataplane.ValidInterfaceName(value); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", flagName, value, err))
		}
	}
	switch mode {
	case modeClusterCIDR, modeNodeCIDR:
	case modeBridgeInterface:
		needs("--pod-bridge-interface", o.podBridgeInterface)
	case modeInterfaceNamePrefix:
		needs("--pod-interface-name-prefix", o.podInterfacePrefix)
	default:
		errs = append(errs, fmt.Errorf("--detect-local-mode=%q: want %s, %s, %s or %s", mode,
			modeClusterCIDR, modeNodeCIDR, modeBridgeInterface, modeInterfaceNamePrefix))
	}
	return errs
}

// localDetector turns the validated flags into the data plane's detector;
// fromNode says the agent fills its ranges from the Node (mode NodeCIDR).
func (o *options) localDetector() (d dataplane.LocalDetector, fromNode bool) {
	switch o.detectLocalMode {
	case modeNodeCIDR:
		return d, true
	case modeBridgeInterface:
		return dataplane.LocalDetector{Interface: o.podBridgeInterface}, false
	case modeInterfaceNamePrefix:
		return dataplane.LocalDetector{Interface: o.podInterfacePrefix, InterfacePrefix: true}, false
	}
	pods, _ := parseCIDRs("--cluster-cidr", o.clusterCIDRs) // validated
	return dataplane.LocalDetector{PodCIDRs: pods}, false
}

// noLocalDetection says, at start, whether the flags detect nothing: mode
// ClusterCIDR without --cluster-cidr is legal (and kube-proxy's default),
// but rarely meant.
func (o *options) noLocalDetection() bool {
	return o.detectLocalMode == modeClusterCIDR && len(o.clusterCIDRs) == 0
}
