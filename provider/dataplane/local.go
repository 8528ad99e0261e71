package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
)

// LocalDetector says which packets come from pods: by source address
// (kube-proxy's modes ClusterCIDR and NodeCIDR: the cluster's or this node's
// pod ranges) or by the interface they came in through (modes
// BridgeInterface and InterfaceNamePrefix). Interface, when set, wins.
//
// Detection is per family: PodCIDRs of one family detect nothing in the
// other, while an interface detects both.
type LocalDetector struct {
	// PodCIDRs are pod ranges; a source inside them is a pod.
	PodCIDRs []netip.Prefix
	// Interface names the interface pods' traffic enters the node through:
	// a bridge, or with InterfacePrefix the common prefix of the pods'
	// host-side veth names. It must pass ValidInterfaceName.
	Interface       string
	InterfacePrefix bool
}

// match is the nft expression that matches a packet from a pod in family
// f, or "" when nothing is detected there. Both forms are single lookups or
// comparisons, so every rule using them stays static text.
func (d LocalDetector) match(f ipFamily) string {
	if d.Interface != "" {
		name := d.Interface
		if d.InterfacePrefix {
			// nft reads a trailing * in a string as a prefix match.
			name += "*"
		}
		return `iifname "` + name + `"`
	}
	for _, p := range d.PodCIDRs {
		if familyOf(p.Addr().Unmap().Is6()) == f {
			return fmt.Sprintf("%s saddr @%s", f.ip, f.podCIDRs())
		}
	}
	return ""
}

// ErrInterfaceName is returned by ValidInterfaceName.
var ErrInterfaceName = errors.New("not a usable interface name")

// ValidInterfaceName checks that name can be a Linux interface name (or a
// prefix of one) and can be written in an nft rule as it is: at most 15
// bytes (IFNAMSIZ less the terminating NUL), not "." or "..", and only
// letters, digits and "-_.@+", so that nothing in it is nft syntax (a quote
// would end the string, a "*" would make a prefix of an exact name).
func ValidInterfaceName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInterfaceName)
	case len(name) > 15:
		return fmt.Errorf("%w: %q is longer than 15 bytes", ErrInterfaceName, name)
	case name == "." || name == "..":
		return fmt.Errorf("%w: %q", ErrInterfaceName, name)
	}
	for _, c := range name {
		if !isInterfaceNameChar(c) {
			return fmt.Errorf("%w: %q has %q; allowed are letters, digits and -_.@+", ErrInterfaceName, name, c)
		}
	}
	return nil
}

func isInterfaceNameChar(c rune) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '_', '.', '@', '+':
		return true
	}
	return false
}
