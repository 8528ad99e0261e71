package election

import (
	v1 "k8s.io/api/core/v1"
)

// TaintOutOfService is the taint an administrator puts on a node that is
// shut down for good (non-graceful node shutdown); its addresses move away
// at once instead of waiting for the node to be declared dead.
const TaintOutOfService = "node.kubernetes.io/out-of-service"

// MemberState is a herald-agent's state in the membership, as this node
// sees it.
type MemberState int

// Member states. Suspect counts as alive: a suspect may refute, and moving
// its addresses on suspicion alone would make them flap.
const (
	MemberUnknown MemberState = iota // never seen
	MemberAlive
	MemberSuspect
	MemberDead
	MemberLeft // left on purpose (shut down after handing over)
)

// Member is a herald-agent as the membership reports it.
type Member struct {
	State MemberState
	// Draining: the agent is shutting down and hands its addresses over.
	Draining bool
}

// Alive reports whether the member counts as running.
func (m Member) Alive() bool { return m.State == MemberAlive || m.State == MemberSuspect }

// NodeIneligible says why node may announce nothing at all, judging by its
// Kubernetes state alone; "" when it may.
func NodeIneligible(node *v1.Node) Reason {
	ready := false
	for _, c := range node.Status.Conditions {
		if c.Type == v1.NodeReady {
			ready = c.Status == v1.ConditionTrue
		}
	}
	switch {
	case !ready:
		return ReasonNotReady
	case node.Spec.Unschedulable:
		return ReasonCordoned
	case hasTaint(node, TaintOutOfService):
		return ReasonOutOfService
	}
	if _, ok := node.Labels[v1.LabelNodeExcludeBalancers]; ok {
		return ReasonExcluded
	}
	return ""
}

func hasTaint(node *v1.Node, key string) bool {
	for _, t := range node.Spec.Taints {
		if t.Key == key {
			return true
		}
	}
	return false
}

// CandidateInput is what Candidates needs to know of one key.
type CandidateInput struct {
	// Nodes are every Node of the cluster.
	Nodes []*v1.Node
	// Selected reports whether an advertisement of the addresses' pool
	// selects the node.
	Selected func(*v1.Node) bool
	// Members are the herald-agents by node name.
	Members map[string]Member
	// IgnoreMembers skips the membership checks (alive, draining): BGP
	// leaves liveness to the routers, which hold a session with every node
	// (see package bgp).
	IgnoreMembers bool
	// LocalEndpoints, for externalTrafficPolicy Local, holds the nodes with
	// a ready endpoint of the Service; nil means any node will do.
	LocalEndpoints map[string]bool
}

// Candidates lists every node with the first reason it may not announce
// the addresses, or none.
func Candidates(in CandidateInput) []Candidate {
	out := make([]Candidate, 0, len(in.Nodes))
	for _, node := range in.Nodes {
		out = append(out, Candidate{Node: node.Name, Ineligible: ineligible(in, node)})
	}
	return out
}

func ineligible(in CandidateInput, node *v1.Node) Reason {
	if !in.Selected(node) {
		return ReasonNotSelected
	}
	if r := NodeIneligible(node); r != "" {
		return r
	}
	member := in.Members[node.Name]
	switch {
	case in.IgnoreMembers:
	case !member.Alive():
		return ReasonAgentNotAlive
	case member.Draining:
		return ReasonDraining
	}
	if in.LocalEndpoints != nil && !in.LocalEndpoints[node.Name] {
		return ReasonNoLocalEndpoints
	}
	return ""
}
