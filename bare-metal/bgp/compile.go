package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/election"
)

// Defaults of the optional BGPPeer fields (MetalLB's and FRR's where they
// have one).
const (
	DefaultPort             = 179
	DefaultHoldTime         = 90 * time.Second
	DefaultBFDInterval      = 300 * time.Millisecond
	DefaultBFDMultiplier    = 3
	DefaultRestartTime      = 120 * time.Second
	DefaultAggregationV4    = 32
	DefaultAggregationV6    = 128
	minHoldTime             = 3 * time.Second
	maxTimerSeconds         = 65535
	maxRestartTime          = 4095 * time.Second
	minBFDInterval          = 10 * time.Millisecond
	maxBFDInterval          = 60 * time.Second
	defaultPasswordKey      = "password"
	maxMD5PasswordLength    = 80 // Linux's TCP_MD5SIG_MAXKEYLEN
	keepaliveHoldTimeFactor = 3
)

// ErrInvalidSpec is wrapped by every error about a spec the CRD's schema
// should have refused (an object stored before a stricter CRD, or written
// around it); the object is ignored.
var ErrInvalidSpec = errors.New("invalid spec")

// PasswordRef returns the Secret key a BGPPeer's password is in, if any.
func PasswordRef(spec v1alpha1.BGPPeerSpec) (name, key string, ok bool) {
	if spec.PasswordSecret == nil {
		return "", "", false
	}
	key = spec.PasswordSecret.Key
	if key == "" {
		key = defaultPasswordKey
	}
	return spec.PasswordSecret.Name, key, true
}

// PeerConfigFromSpec turns a BGPPeer into the session a node opens, with
// the defaults filled in. password is the Secret's value (ignored when the
// spec names no Secret).
func PeerConfigFromSpec(name string, spec v1alpha1.BGPPeerSpec, password string) (PeerConfig, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	p := PeerConfig{Name: name, Port: DefaultPort, HoldTime: DefaultHoldTime, EBGPMultihop: spec.EBGPMultiHop}
	var err error
	if p.Address, err = netip.ParseAddr(spec.PeerAddress); err != nil || p.Address.Zone() != "" {
		bad("peerAddress %q is not an IP address without a zone", spec.PeerAddress)
	}
	p.PeerASN, p.LocalASN = asn(spec.PeerASN, "peerASN", bad), asn(spec.LocalASN, "localASN", bad)
	if spec.PeerPort != 0 {
		if spec.PeerPort < 1 || spec.PeerPort > 65535 {
			bad("peerPort %d is not in 1-65535", spec.PeerPort)
		}
		p.Port = uint16(spec.PeerPort) //nolint:gosec // checked above
	}
	if spec.HoldTime != nil {
		p.HoldTime = spec.HoldTime.Duration
		if p.HoldTime < minHoldTime || p.HoldTime > maxTimerSeconds*time.Second || p.HoldTime%time.Second != 0 {
			bad("holdTime %v is not whole seconds in 3s-65535s", p.HoldTime)
		}
	}
	p.KeepaliveTime = (p.HoldTime / keepaliveHoldTimeFactor).Truncate(time.Second)
	if spec.KeepaliveTime != nil {
		p.KeepaliveTime = spec.KeepaliveTime.Duration
		if p.KeepaliveTime < time.Second || p.KeepaliveTime >= p.HoldTime || p.KeepaliveTime%time.Second != 0 {
			bad("keepaliveTime %v is not whole seconds from 1s to less than holdTime %v", p.KeepaliveTime, p.HoldTime)
		}
	}
	if spec.PasswordSecret != nil {
		if password == "" || len(password) > maxMD5PasswordLength {
			bad("the password has %d bytes; want 1-%d", len(password), maxMD5PasswordLength)
		}
		p.Password = password
	}
	if spec.EBGPMultiHop && !p.EBGP() {
		bad("ebgpMultiHop on an iBGP session")
	}
	if spec.SourceAddress != "" {
		if p.SourceAddress, err = netip.ParseAddr(spec.SourceAddress); err != nil || p.SourceAddress.Is4() != p.Address.Is4() {
			bad("sourceAddress %q is not an address of peerAddress's family", spec.SourceAddress)
		}
	}
	if spec.BFD != nil {
		p.BFD = bfdConfig(*spec.BFD, bad)
	}
	if spec.GracefulRestart != nil {
		p.GracefulRestart = GracefulRestartConfig{Enabled: true, RestartTime: DefaultRestartTime}
		if d := spec.GracefulRestart.RestartTime; d != nil {
			p.GracefulRestart.RestartTime = d.Duration
			if d.Duration < time.Second || d.Duration > maxRestartTime {
				bad("gracefulRestart.restartTime %v is not in 1s-4095s", d.Duration)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return PeerConfig{}, fmt.Errorf("%w: BGPPeer %s: %w", ErrInvalidSpec, name, err)
	}
	return p, nil
}

func asn(v int64, field string, bad func(string, ...any)) uint32 {
	if v < 1 || v > 1<<32-1 {
		bad("%s %d is not in 1-4294967295", field, v)
		return 0
	}
	return uint32(v)
}

func bfdConfig(spec v1alpha1.BFDProfile, bad func(string, ...any)) BFDConfig {
	c := BFDConfig{Enabled: true, ReceiveInterval: DefaultBFDInterval, TransmitInterval: DefaultBFDInterval,
		DetectMultiplier: DefaultBFDMultiplier}
	for _, f := range []struct {
		name string
		in   *metav1.Duration
		out  *time.Duration
	}{{"receiveInterval", spec.ReceiveInterval, &c.ReceiveInterval}, {"transmitInterval", spec.TransmitInterval, &c.TransmitInterval}} {
		if f.in == nil {
			continue
		}
		*f.out = f.in.Duration
		if f.in.Duration < minBFDInterval || f.in.Duration > maxBFDInterval {
			bad("bfd.%s %v is not in 10ms-60s", f.name, f.in.Duration)
		}
	}
	if spec.DetectMultiplier != 0 {
		if spec.DetectMultiplier < 2 || spec.DetectMultiplier > 255 {
			bad("bfd.detectMultiplier %d is not in 2-255", spec.DetectMultiplier)
		}
		c.DetectMultiplier = uint8(spec.DetectMultiplier) //nolint:gosec // checked above
	}
	return c
}

// Advertisement is a BGPAdvertisement with its selectors and attributes
// parsed.
type Advertisement struct {
	Name string
	// Pools and PoolSelectors select pools; with neither, every pool.
	Pools         []string
	PoolSelectors []labels.Selector
	NodeSelectors []labels.Selector
	// Peers names the peers; empty: every peer.
	Peers []string
	// AggregationV4 and AggregationV6 are the advertised prefix lengths.
	AggregationV4, AggregationV6 int
	Attrs                        Attributes
}

// CompileAdvertisement parses a BGPAdvertisement. An error means the
// advertisement is ignored as a whole: a broken selector must not widen
// what is advertised.
func CompileAdvertisement(name string, spec v1alpha1.BGPAdvertisementSpec) (Advertisement, error) {
	a := Advertisement{Name: name, Pools: spec.IPAddressPools, Peers: spec.Peers,
		AggregationV4: DefaultAggregationV4, AggregationV6: DefaultAggregationV6}
	var errs []error
	var err error
	if a.PoolSelectors, err = election.Selectors(spec.IPAddressPoolSelectors); err != nil {
		errs = append(errs, fmt.Errorf("ipAddressPoolSelectors: %w", err))
	}
	if a.NodeSelectors, err = election.Selectors(spec.NodeSelectors); err != nil {
		errs = append(errs, fmt.Errorf("nodeSelectors: %w", err))
	}
	if l := spec.AggregationLength; l != nil {
		a.AggregationV4 = int(*l)
		if *l < 0 || *l > 32 {
			errs = append(errs, fmt.Errorf("aggregationLength %d is not in 0-32", *l))
		}
	}
	if l := spec.AggregationLengthV6; l != nil {
		a.AggregationV6 = int(*l)
		if *l < 0 || *l > 128 {
			errs = append(errs, fmt.Errorf("aggregationLengthV6 %d is not in 0-128", *l))
		}
	}
	communities, err := parseAll(spec.Communities, ParseCommunity)
	errs = append(errs, err)
	large, err := parseAll(spec.LargeCommunities, ParseLargeCommunity)
	errs = append(errs, err)
	a.Attrs = NewAttributes(communities, large)
	if lp := spec.LocalPref; lp != nil {
		if *lp < 0 || *lp > 1<<32-1 {
			errs = append(errs, fmt.Errorf("localPref %d is not in 0-4294967295", *lp))
		}
		a.Attrs.LocalPref, a.Attrs.HasLocalPref = uint32(*lp), true //nolint:gosec // checked above
	}
	if err := errors.Join(errs...); err != nil {
		return Advertisement{}, fmt.Errorf("%w: BGPAdvertisement %s: %w", ErrInvalidSpec, name, err)
	}
	return a, nil
}

func parseAll[T any](in []string, parse func(string) (T, error)) ([]T, error) {
	out := make([]T, 0, len(in))
	var errs []error
	for _, s := range in {
		v, err := parse(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, v)
	}
	return out, errors.Join(errs...)
}

var wellKnownCommunities = map[string]uint32{
	"no-export": CommunityNoExport, "no-advertise": CommunityNoAdvertise,
	"local-as": CommunityLocalAS, "no-peer": CommunityNoPeer,
}

// ParseCommunity parses "ASN:value" (each 0-65535) or a well-known name.
func ParseCommunity(s string) (uint32, error) {
	if c, ok := wellKnownCommunities[s]; ok {
		return c, nil
	}
	hi, lo, ok := strings.Cut(s, ":")
	h, err1 := strconv.ParseUint(hi, 10, 16)
	l, err2 := strconv.ParseUint(lo, 10, 16)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("community %q: want ASN:value with both in 0-65535, or no-export, no-advertise, local-as, no-peer", s)
	}
	return uint32(h)<<16 | uint32(l), nil
}

// ParseLargeCommunity parses "global:local1:local2", each 0-4294967295.
func ParseLargeCommunity(s string) (LargeCommunity, error) {
	parts := strings.Split(s, ":")
	var n [3]uint32
	if len(parts) != len(n) {
		return LargeCommunity{}, fmt.Errorf("large community %q: want three numbers joined by ':'", s)
	}
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return LargeCommunity{}, fmt.Errorf("large community %q: %w", s, err)
		}
		n[i] = uint32(v)
	}
	return LargeCommunity{Global: n[0], Local1: n[1], Local2: n[2]}, nil
}

// Prefix is the prefix addr is advertised as under a: the address alone,
// or the covering prefix of the aggregation length.
func (a Advertisement) Prefix(addr netip.Addr) netip.Prefix {
	bits := a.AggregationV4
	if addr.Is6() {
		bits = a.AggregationV6
	}
	p, _ := addr.Prefix(bits) // bits is within the family's range (compiled)
	return p
}
