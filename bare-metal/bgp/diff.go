package bgp

import (
	"cmp"
	"net/netip"
	"slices"
)

// Change is one step that takes the advertised paths toward the desired
// ones: advertise a path to a peer (new, or with new attributes), or
// withdraw it.
type Change struct {
	Peer     string
	Prefix   netip.Prefix
	Attrs    Attributes
	Withdraw bool
}

// Diff returns the changes that turn announced into desired, per peer:
// withdrawals first, then advertisements, each sorted by peer and prefix so
// that the order is stable. A path whose attributes changed is
// re-advertised, never withdrawn first: the new attributes replace the old
// ones at the router without the route flapping.
func Diff(desired, announced Table) []Change {
	var withdraw, advertise []Change
	for peer, paths := range announced {
		for prefix := range paths {
			if _, ok := desired[peer][prefix]; !ok {
				withdraw = append(withdraw, Change{Peer: peer, Prefix: prefix, Withdraw: true})
			}
		}
	}
	for peer, paths := range desired {
		for prefix, attrs := range paths {
			if old, ok := announced[peer][prefix]; !ok || old != attrs {
				advertise = append(advertise, Change{Peer: peer, Prefix: prefix, Attrs: attrs})
			}
		}
	}
	sortChanges(withdraw)
	sortChanges(advertise)
	return append(withdraw, advertise...)
}

func sortChanges(cs []Change) {
	slices.SortFunc(cs, func(a, b Change) int {
		return cmp.Or(cmp.Compare(a.Peer, b.Peer), a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
	})
}

// PeerChanges are the sessions to open, to reconfigure and to close.
type PeerChanges struct {
	Add, Update []PeerConfig
	// Remove are the names of the peers to close.
	Remove []string
}

// Empty reports whether nothing changes.
func (c PeerChanges) Empty() bool { return len(c.Add)+len(c.Update)+len(c.Remove) == 0 }

// DiffPeers compares the desired sessions with the configured ones, by
// name. A peer whose address changed is closed and opened anew (a session
// is bound to its address); any other change is an update.
func DiffPeers(desired []PeerConfig, configured map[string]PeerConfig) PeerChanges {
	var out PeerChanges
	want := map[string]bool{}
	for _, p := range desired {
		want[p.Name] = true
		old, ok := configured[p.Name]
		switch {
		case !ok:
			out.Add = append(out.Add, p)
		case old.Address != p.Address:
			out.Remove = append(out.Remove, p.Name)
			out.Add = append(out.Add, p)
		case old != p:
			out.Update = append(out.Update, p)
		}
	}
	for name := range configured {
		if !want[name] {
			out.Remove = append(out.Remove, name)
		}
	}
	byName := func(a, b PeerConfig) int { return cmp.Compare(a.Name, b.Name) }
	slices.SortFunc(out.Add, byName)
	slices.SortFunc(out.Update, byName)
	slices.Sort(out.Remove)
	return out
}
