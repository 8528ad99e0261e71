package bgp

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// PeerConfig is one BGP session as this node opens it: a BGPPeer with its
// defaults filled in and its password read. It is comparable, so a change
// of any field is a change of the session.
type PeerConfig struct {
	// Name is the BGPPeer's name; paths are advertised per peer name.
	Name     string
	Address  netip.Addr
	Port     uint16
	PeerASN  uint32
	LocalASN uint32
	// HoldTime and KeepaliveTime are whole seconds.
	HoldTime      time.Duration
	KeepaliveTime time.Duration
	// Password enables TCP MD5 authentication when not empty.
	Password      string
	EBGPMultihop  bool
	SourceAddress netip.Addr
	BFD           BFDConfig
	// GracefulRestart advertises the capability when Enabled.
	GracefulRestart GracefulRestartConfig
}

// BFDConfig are the BFD timers of a session; Enabled false runs none.
type BFDConfig struct {
	Enabled          bool
	ReceiveInterval  time.Duration
	TransmitInterval time.Duration
	DetectMultiplier uint8
}

// GracefulRestartConfig is the graceful restart capability of a session.
type GracefulRestartConfig struct {
	Enabled     bool
	RestartTime time.Duration
}

// EBGP reports whether the session is external.
func (p PeerConfig) EBGP() bool { return p.PeerASN != p.LocalASN }

// LargeCommunity is an RFC 8092 large community.
type LargeCommunity struct {
	Global, Local1, Local2 uint32
}

func (c LargeCommunity) String() string { return fmt.Sprintf("%d:%d:%d", c.Global, c.Local1, c.Local2) }

// Well-known communities (RFC 1997, RFC 3765).
const (
	CommunityNoExport    uint32 = 0xFFFFFF01
	CommunityNoAdvertise uint32 = 0xFFFFFF02
	CommunityLocalAS     uint32 = 0xFFFFFF03
	CommunityNoPeer      uint32 = 0xFFFFFF04
)

// Attributes are what a path carries besides its prefix. The value is
// comparable (communities are kept as canonical strings), so that a change
// of attributes is a plain inequality.
type Attributes struct {
	// Communities is the sorted, comma-separated list of communities in
	// ASN:value form ("" for none): see Communities().
	communities string
	// largeCommunities likewise, in global:local1:local2 form.
	largeCommunities string
	// LocalPref, when HasLocalPref, is sent to iBGP peers.
	LocalPref    uint32
	HasLocalPref bool
	// NextHop is the next hop to announce; invalid means the session's
	// own local address, which is the node's address toward the peer. It
	// is set only when the path's family differs from the session's (an
	// IPv6 VIP over an IPv4 session): then the node's address of the
	// path's family on the interface toward the peer.
	NextHop netip.Addr
}

// NewAttributes builds attributes from unsorted, possibly repeated
// communities.
func NewAttributes(communities []uint32, large []LargeCommunity) Attributes {
	var a Attributes
	a.communities = joinSorted(communities, func(c uint32) string { return fmt.Sprintf("%d:%d", c>>16, c&0xFFFF) }, cmp.Compare[uint32])
	a.largeCommunities = joinSorted(large, LargeCommunity.String, func(x, y LargeCommunity) int {
		return cmp.Or(cmp.Compare(x.Global, y.Global), cmp.Compare(x.Local1, y.Local1), cmp.Compare(x.Local2, y.Local2))
	})
	return a
}

func joinSorted[T comparable](in []T, format func(T) string, compare func(T, T) int) string {
	s := slices.Clone(in)
	slices.SortFunc(s, compare)
	s = slices.Compact(s)
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = format(v)
	}
	return strings.Join(parts, ",")
}

// Communities returns the communities as ASN:value strings, sorted.
func (a Attributes) Communities() []string { return splitList(a.communities) }

// LargeCommunities returns the large communities as strings, sorted.
func (a Attributes) LargeCommunities() []string { return splitList(a.largeCommunities) }

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// Merge combines the attributes of two advertisements of one path: the
// union of their communities and the higher local preference (the
// stronger wish wins, and the result does not depend on the order the
// advertisements are read in). The next hops are the same by construction.
func (a Attributes) Merge(b Attributes) Attributes {
	out := a
	out.communities = mergeLists(a.communities, b.communities)
	out.largeCommunities = mergeLists(a.largeCommunities, b.largeCommunities)
	if b.HasLocalPref && (!a.HasLocalPref || b.LocalPref > a.LocalPref) {
		out.LocalPref, out.HasLocalPref = b.LocalPref, true
	}
	return out
}

// mergeLists unions two canonical lists. Both are sorted by number, which
// string order does not follow, so the union is re-sorted by number.
func mergeLists(a, b string) string {
	all := append(splitList(a), splitList(b)...)
	slices.SortFunc(all, compareNumbered)
	return strings.Join(slices.Compact(all), ",")
}

// compareNumbered orders "1:2" and "1:2:3" strings by their numbers.
func compareNumbered(x, y string) int {
	xs, ys := strings.Split(x, ":"), strings.Split(y, ":")
	for i := range min(len(xs), len(ys)) {
		if c := cmp.Or(cmp.Compare(len(xs[i]), len(ys[i])), strings.Compare(xs[i], ys[i])); c != 0 {
			return c
		}
	}
	return cmp.Compare(len(xs), len(ys))
}

func (a Attributes) String() string {
	var parts []string
	if a.communities != "" {
		parts = append(parts, "communities="+a.communities)
	}
	if a.largeCommunities != "" {
		parts = append(parts, "large-communities="+a.largeCommunities)
	}
	if a.HasLocalPref {
		parts = append(parts, fmt.Sprintf("local-pref=%d", a.LocalPref))
	}
	if a.NextHop.IsValid() {
		parts = append(parts, "next-hop="+a.NextHop.String())
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// Table is what is advertised: peer name → prefix → attributes.
type Table map[string]map[netip.Prefix]Attributes

// Add puts a path in t, merging its attributes with those already there.
func (t Table) Add(peer string, prefix netip.Prefix, attrs Attributes) {
	paths := t[peer]
	if paths == nil {
		paths = map[netip.Prefix]Attributes{}
		t[peer] = paths
	}
	if old, ok := paths[prefix]; ok {
		attrs = old.Merge(attrs)
	}
	paths[prefix] = attrs
}

// Count returns how many prefixes go to peer.
func (t Table) Count(peer string) int { return len(t[peer]) }

// SessionState is a BGP session's state (RFC 4271's finite state machine),
// named as in BGPPeer's status.
type SessionState string

// Session states.
const (
	StateUnknown     SessionState = ""
	StateIdle        SessionState = "Idle"
	StateConnect     SessionState = "Connect"
	StateActive      SessionState = "Active"
	StateOpenSent    SessionState = "OpenSent"
	StateOpenConfirm SessionState = "OpenConfirm"
	StateEstablished SessionState = "Established"
)

// BFDState is a BFD session's state (RFC 5880); "" without BFD.
type BFDState string

// BFD states.
const (
	BFDNone      BFDState = ""
	BFDDown      BFDState = "Down"
	BFDInit      BFDState = "Init"
	BFDUp        BFDState = "Up"
	BFDAdminDown BFDState = "AdminDown"
)

// PeerStatus is a session's state as the router reports it.
type PeerStatus struct {
	Name    string
	Address netip.Addr
	State   SessionState
	BFD     BFDState
	// Since is when State last changed.
	Since time.Time
	// LastError is why the session last went down, if the router knows.
	LastError string
}

// PeerEvent is a session changing state.
type PeerEvent struct {
	Name     string
	Address  netip.Addr
	From, To SessionState
	// Reason is why a session went down, if known.
	Reason string
	At     time.Time
}
