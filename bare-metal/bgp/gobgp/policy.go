package gobgp

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/osrg/gobgp/v4/api"

	herald "github.com/heraldlb/herald/bare-metal/bgp"
)

// groupKey identifies one export statement of a peer: GoBGP prefix sets
// hold one family, and one statement sets one list of attributes.
type groupKey struct {
	v6    bool
	attrs herald.Attributes
}

// group is one export policy: the peer's neighbor set and a prefix set,
// accepted with attributes.
type group struct {
	name     string // of the policy, its statement and its prefix set
	prefixes int
}

func prefixSet(name string, prefixes ...netip.Prefix) *api.DefinedSet {
	set := &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: name}
	for _, p := range prefixes {
		bits := uint32(p.Bits()) //nolint:gosec // 0-128
		set.Prefixes = append(set.Prefixes, &api.Prefix{IpPrefix: p.String(), MaskLengthMin: bits, MaskLengthMax: bits})
	}
	return set
}

// addToGroup puts prefix in p's group for key, creating the group (prefix
// set, policy, and its place in the global export assignment) on first use.
// A prefix set is created with its first prefix: GoBGP takes a set's
// family from it.
func (r *Router) addToGroup(ctx context.Context, p *peer, key groupKey, prefix netip.Prefix) error {
	if g, ok := p.groups[key]; ok {
		if err := r.server.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: prefixSet(g.name, prefix)}); err != nil {
			return fmt.Errorf("gobgp: adding %s to %s: %w", prefix, g.name, err)
		}
		g.prefixes++
		return nil
	}
	r.seq++
	g := &group{name: fmt.Sprintf("herald-%s-%d", p.cfg.Name, r.seq), prefixes: 1}
	if err := r.server.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: prefixSet(g.name, prefix), Replace: true}); err != nil {
		return fmt.Errorf("gobgp: prefix set %s: %w", g.name, err)
	}
	policy := &api.Policy{Name: g.name, Statements: []*api.Statement{{
		Name: g.name,
		Conditions: &api.Conditions{
			NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: p.neighborSet},
			PrefixSet:   &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: g.name},
		},
		Actions: actions(key.attrs),
	}}}
	if err := r.server.AddPolicy(ctx, &api.AddPolicyRequest{Policy: policy}); err != nil {
		_ = r.deletePrefixSet(ctx, g.name)
		return fmt.Errorf("gobgp: policy %s: %w", g.name, err)
	}
	p.groups[key] = g
	if err := r.assignExport(ctx); err != nil {
		delete(p.groups, key)
		return err
	}
	return nil
}

// removeFromGroup takes prefix out of p's group for key and drops the group
// once it is empty.
func (r *Router) removeFromGroup(ctx context.Context, p *peer, key groupKey, prefix netip.Prefix) error {
	g, ok := p.groups[key]
	if !ok {
		return nil
	}
	if g.prefixes > 1 {
		if err := r.server.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: prefixSet(g.name, prefix)}); err != nil {
			return fmt.Errorf("gobgp: removing %s from %s: %w", prefix, g.name, err)
		}
		g.prefixes--
		return nil
	}
	// The policy leaves the assignment before its prefix set goes: GoBGP
	// refuses to delete a set in use.
	delete(p.groups, key)
	if err := r.assignExport(ctx); err != nil {
		p.groups[key] = g
		return err
	}
	if err := r.server.DeletePolicy(ctx, &api.DeletePolicyRequest{Policy: &api.Policy{Name: g.name}, All: true}); err != nil {
		return fmt.Errorf("gobgp: deleting policy %s: %w", g.name, err)
	}
	return r.deletePrefixSet(ctx, g.name)
}

func (r *Router) deletePrefixSet(ctx context.Context, name string) error {
	if err := r.server.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: prefixSet(name), All: true}); err != nil {
		return fmt.Errorf("gobgp: deleting prefix set %s: %w", name, err)
	}
	return nil
}

// assignExport sets the global export assignment to every group's policy,
// in a stable order, rejecting whatever none accepts.
func (r *Router) assignExport(ctx context.Context) error {
	var names []string
	for _, p := range r.peers {
		for _, g := range p.groups {
			names = append(names, g.name)
		}
	}
	slices.SortFunc(names, cmp.Compare[string])
	assignment := &api.PolicyAssignment{Direction: api.PolicyDirection_POLICY_DIRECTION_EXPORT,
		DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT}
	for _, n := range names {
		assignment.Policies = append(assignment.Policies, &api.Policy{Name: n})
	}
	if err := r.server.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: assignment}); err != nil {
		return fmt.Errorf("gobgp: export policy: %w", err)
	}
	return nil
}
