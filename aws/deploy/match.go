package deploy

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	"github.com/heraldlb/herald/aws/api"
	"github.com/heraldlb/herald/aws/model"
)

// The pure half of deploy: what to change, given what is desired and what
// exists. Each function is a free function with a table test.

// diffTargets returns the targets to register and to deregister.
func diffTargets(desired []model.Target, current []api.TargetHealth) (add, remove []api.Target) {
	want := map[api.Target]bool{}
	for _, t := range desired {
		want[api.Target{ID: t.ID, Port: t.Port}] = true
	}
	have := map[api.Target]bool{}
	for _, h := range current {
		have[h.Target] = true
		if !want[h.Target] {
			remove = append(remove, h.Target)
		}
	}
	for t := range want {
		if !have[t] {
			add = append(add, t)
		}
	}
	sortTargets(add)
	sortTargets(remove)
	return add, remove
}

func sortTargets(ts []api.Target) {
	slices.SortFunc(ts, func(a, b api.Target) int { return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Port, b.Port)) })
}

// changedAttributes returns the desired attributes whose value differs.
// Attributes the Service does not set are left as they are: AWS has no
// "unset", and resetting to defaults herald guessed would fight the user.
func changedAttributes(desired, current map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range desired {
		if current[k] != v {
			out[k] = v
		}
	}
	return out
}

// diffTags returns the tags to add (or overwrite) and the keys to remove.
func diffTags(desired, current map[string]string) (add map[string]string, remove []string) {
	add = map[string]string{}
	for k, v := range desired {
		if cur, ok := current[k]; !ok || cur != v {
			add[k] = v
		}
	}
	for _, k := range slices.Sorted(maps.Keys(current)) {
		if _, ok := desired[k]; !ok {
			remove = append(remove, k)
		}
	}
	return add, remove
}

// syncTags brings a resource's tags from have to want through its API's
// writes (ELBv2's AddTags/RemoveTags, EC2's CreateTags/DeleteTags); what
// names the resource in errors.
func syncTags(what string, want, have map[string]string, add func(map[string]string) error, remove func([]string) error) error {
	added, removed := diffTags(want, have)
	if len(added) > 0 {
		if err := add(added); err != nil {
			return fmt.Errorf("tagging %s: %w", what, err)
		}
	}
	if len(removed) > 0 {
		if err := remove(removed); err != nil {
			return fmt.Errorf("untagging %s: %w", what, err)
		}
	}
	return nil
}

// listenerPlan is how to bring a load balancer's listeners in line.
type listenerPlan struct {
	create, modify []api.Listener
	remove         []string
}

// diffListeners matches listeners by port. tgARN maps target-group keys
// to ARNs. A listener with another protocol, target group or TLS setting
// is modified in place (AWS allows all of these), so a port never goes
// dark during an update.
func diffListeners(lbARN string, desired []model.Listener, tgARN map[string]string, current []api.Listener) listenerPlan {
	var plan listenerPlan
	byPort := map[int32]api.Listener{}
	for _, l := range current {
		byPort[l.Port] = l
	}
	wanted := map[int32]bool{}
	for _, d := range desired {
		wanted[d.Port] = true
		want := api.Listener{LoadBalancerARN: lbARN, Port: d.Port, Protocol: d.Protocol, TargetGroupARN: tgARN[d.TargetGroup],
			Certificates: d.Certificates, SSLPolicy: d.SSLPolicy}
		have, ok := byPort[d.Port]
		if !ok {
			plan.create = append(plan.create, want)
			continue
		}
		want.ARN = have.ARN
		if have.Protocol != want.Protocol || have.TargetGroupARN != want.TargetGroupARN ||
			!slices.Equal(have.Certificates, want.Certificates) || have.SSLPolicy != want.SSLPolicy {
			plan.modify = append(plan.modify, want)
		}
	}
	for _, l := range current {
		if !wanted[l.Port] {
			plan.remove = append(plan.remove, l.ARN)
		}
	}
	slices.Sort(plan.remove)
	return plan
}

// healthCheckOf converts the model's health check.
func healthCheckOf(hc model.HealthCheck) api.HealthCheck {
	return api.HealthCheck{Protocol: hc.Protocol, Port: hc.Port, Path: hc.Path, IntervalSeconds: hc.IntervalSeconds,
		TimeoutSeconds: hc.TimeoutSeconds, HealthyThreshold: hc.HealthyThreshold, UnhealthyThreshold: hc.UnhealthyThreshold}
}

// diffRules compares the rules herald wants in a group with those it owns
// there (owned filters the group's rules), ignoring descriptions.
func diffRules(desired, current []api.Permission, owned func(api.Permission) bool) (add, revoke []api.Permission) {
	have := map[api.Permission]bool{}
	for _, p := range current {
		if owned(p) {
			have[p.Key()] = true
		}
	}
	want := map[api.Permission]bool{}
	for _, p := range desired {
		want[p.Key()] = true
		if !have[p.Key()] {
			add = append(add, p)
		}
	}
	for _, p := range current {
		if owned(p) && !want[p.Key()] {
			revoke = append(revoke, p)
		}
	}
	return add, revoke
}

// frontendRules are the frontend group's ingress rules.
func frontendRules(sg *model.SecurityGroup) []api.Permission {
	out := make([]api.Permission, 0, len(sg.Ingress))
	for _, r := range sg.Ingress {
		out = append(out, api.Permission{Protocol: r.Protocol, FromPort: r.FromPort, ToPort: r.ToPort, CIDR: r.CIDR,
			Description: "herald.dev load balancer traffic"})
	}
	return out
}
