package election

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"
)

// Reason says why a node does or does not announce an address. Every
// decision carries one, so that logs, conditions and tests can tell "not
// the owner" from "cordoned" from "fenced".
type Reason string

// Reasons, in the order a node's eligibility is checked.
const (
	// ReasonOwner: the node is the owner and announces.
	ReasonOwner Reason = "Owner"
	// ReasonNotOwner: the node may announce, but another node won the
	// election.
	ReasonNotOwner Reason = "NotOwner"
	// ReasonNoCandidate: no node may announce the address.
	ReasonNoCandidate Reason = "NoCandidate"

	ReasonNotSelected      Reason = "NotSelected"      // no advertisement of the pool selects the node
	ReasonNotReady         Reason = "NotReady"         // Node condition Ready is not True
	ReasonCordoned         Reason = "Cordoned"         // spec.unschedulable: handed over before maintenance
	ReasonOutOfService     Reason = "OutOfService"     // taint node.kubernetes.io/out-of-service
	ReasonExcluded         Reason = "Excluded"         // label node.kubernetes.io/exclude-from-external-load-balancers
	ReasonAgentNotAlive    Reason = "AgentNotAlive"    // its herald-agent is not an alive member
	ReasonDraining         Reason = "Draining"         // its herald-agent is shutting down
	ReasonNoLocalEndpoints Reason = "NoLocalEndpoints" // externalTrafficPolicy Local and no ready endpoint on it
)

// Candidate is a node that might announce an address, with the reason it
// may not ("" when it may).
type Candidate struct {
	Node       string
	Ineligible Reason
}

// Decision is one node's view of who announces an address.
type Decision struct {
	// Owner is the node that announces the address; "" when none may.
	Owner string
	// Announce is true when the deciding node is the owner.
	Announce bool
	// Reason explains Announce for the deciding node.
	Reason Reason
}

// Decide elects the owner of key among candidates and says what self
// should do. key identifies what is announced as one unit (a Service's
// addresses move together; see Key). Every node that sees the same
// candidates elects the same owner, with no coordination: the owner is the
// eligible candidate with the highest rendezvous score for key, so that
// keys spread evenly over the nodes and a node's arrival or departure moves
// only the keys it wins or held.
func Decide(self, key string, candidates []Candidate) Decision {
	owner, best := "", uint64(0)
	selfReason := ReasonNotSelected
	for _, c := range candidates {
		if c.Node == self {
			selfReason = c.Ineligible
		}
		if c.Ineligible != "" {
			continue
		}
		// Ties (a hash collision) go to the smaller name, so that every
		// node still agrees.
		if s := score(c.Node, key); owner == "" || s > best || s == best && c.Node < owner {
			owner, best = c.Node, s
		}
	}
	switch {
	case owner == "":
		if selfReason == "" {
			selfReason = ReasonNoCandidate
		}
		return Decision{Reason: selfReason}
	case owner == self:
		return Decision{Owner: owner, Announce: true, Reason: ReasonOwner}
	case selfReason == "":
		return Decision{Owner: owner, Reason: ReasonNotOwner}
	default:
		return Decision{Owner: owner, Reason: selfReason}
	}
}

// Key is the election key of a set of addresses announced together: the
// smallest of them. A dual-stack Service's two addresses thus move as one,
// and Services sharing an address elect the same owner for it.
func Key(addrs []netip.Addr) string {
	if len(addrs) == 0 {
		return ""
	}
	return slices.MinFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) }).String()
}

// score is the rendezvous (highest random weight) score of node for key.
// SHA-256 rather than a faster hash: scores must be the same on every
// node and every herald version, and this runs once per key and node per
// decision, far from any hot path.
func score(node, key string) uint64 {
	h := sha256.Sum256([]byte(strings.Join([]string{node, key}, "#")))
	return binary.BigEndian.Uint64(h[:8])
}
