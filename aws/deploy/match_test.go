package deploy

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/heraldlb/herald/aws/api"
	"github.com/heraldlb/herald/aws/model"
)

func TestDiffTargets(t *testing.T) {
	h := func(id string, port int32) api.TargetHealth {
		return api.TargetHealth{Target: api.Target{ID: id, Port: port}}
	}
	tests := []struct {
		name        string
		desired     []model.Target
		current     []api.TargetHealth
		add, remove string
	}{
		{"empty", nil, nil, "[]", "[]"},
		{"all new", []model.Target{{ID: "i-b", Port: 1}, {ID: "i-a", Port: 1}}, nil, "[{i-a 1} {i-b 1}]", "[]"},
		{"unchanged", []model.Target{{ID: "i-a", Port: 1}}, []api.TargetHealth{h("i-a", 1)}, "[]", "[]"},
		{"node replaced", []model.Target{{ID: "i-a", Port: 1}, {ID: "i-c", Port: 1}}, []api.TargetHealth{h("i-a", 1), h("i-b", 1)}, "[{i-c 1}]", "[{i-b 1}]"},
		{"nodeport moved", []model.Target{{ID: "i-a", Port: 2}}, []api.TargetHealth{h("i-a", 1)}, "[{i-a 2}]", "[{i-a 1}]"},
	}
	for _, tt := range tests {
		add, remove := diffTargets(tt.desired, tt.current)
		if got := fmt.Sprint(orEmpty(add)); got != tt.add {
			t.Errorf("%s: add = %s, want %s", tt.name, got, tt.add)
		}
		if got := fmt.Sprint(orEmpty(remove)); got != tt.remove {
			t.Errorf("%s: remove = %s, want %s", tt.name, got, tt.remove)
		}
	}
}

func orEmpty(ts []api.Target) []api.Target {
	if ts == nil {
		return []api.Target{}
	}
	return ts
}

func TestDiffListeners(t *testing.T) {
	tgs := map[string]string{"tcp-80": "tg-80", "tcp-443": "tg-443"}
	current := []api.Listener{
		{ARN: "l-80", Port: 80, Protocol: "TCP", TargetGroupARN: "tg-old"},
		{ARN: "l-22", Port: 22, Protocol: "TCP", TargetGroupARN: "tg-22"},
		{ARN: "l-443", Port: 443, Protocol: "TCP", TargetGroupARN: "tg-443"},
	}
	desired := []model.Listener{
		{Port: 80, Protocol: "TCP", TargetGroup: "tcp-80"},
		{Port: 443, Protocol: "TCP", TargetGroup: "tcp-443"},
		{Port: 8443, Protocol: "TLS", TargetGroup: "tcp-443", Certificates: []string{"arn:cert"}, SSLPolicy: "p"},
	}
	plan := diffListeners("lb", desired, tgs, current)
	if len(plan.create) != 1 || plan.create[0].Port != 8443 || plan.create[0].TargetGroupARN != "tg-443" || plan.create[0].SSLPolicy != "p" {
		t.Errorf("create = %+v", plan.create)
	}
	if len(plan.modify) != 1 || plan.modify[0].ARN != "l-80" || plan.modify[0].TargetGroupARN != "tg-80" {
		t.Errorf("modify = %+v, want port 80 moved to its new target group in place", plan.modify)
	}
	if !slices.Equal(plan.remove, []string{"l-22"}) {
		t.Errorf("remove = %v", plan.remove)
	}
}

func TestDiffRulesOnlyTouchesOwnedRules(t *testing.T) {
	mine := api.Permission{Protocol: "tcp", FromPort: 30080, ToPort: 30080, SourceGroup: "sg-front", Description: "herald"}
	stale := api.Permission{Protocol: "tcp", FromPort: 30081, ToPort: 30081, SourceGroup: "sg-front", Description: "herald"}
	foreign := api.Permission{Protocol: "tcp", FromPort: 22, ToPort: 22, CIDR: "0.0.0.0/0", Description: "ssh"}
	renamed := mine
	renamed.Description = "edited by hand"
	owned := func(p api.Permission) bool { return p.SourceGroup == "sg-front" }
	add, revoke := diffRules([]api.Permission{mine}, []api.Permission{renamed, stale, foreign}, owned)
	if len(add) != 0 {
		t.Errorf("add = %+v: a rule differing only in description is the same rule", add)
	}
	if len(revoke) != 1 || revoke[0] != stale {
		t.Errorf("revoke = %+v, want only the stale owned rule", revoke)
	}
}

func TestDiffTagsAndAttributes(t *testing.T) {
	add, remove := diffTags(map[string]string{"a": "1", "b": "2"}, map[string]string{"a": "1", "b": "old", "c": "3"})
	if !maps.Equal(add, map[string]string{"b": "2"}) || !slices.Equal(remove, []string{"c"}) {
		t.Errorf("diffTags = %v, %v", add, remove)
	}
	changed := changedAttributes(map[string]string{"x": "true", "y": "1"}, map[string]string{"x": "false", "y": "1", "z": "kept"})
	if !maps.Equal(changed, map[string]string{"x": "true"}) {
		t.Errorf("changedAttributes = %v", changed)
	}
}

func TestOnePerZone(t *testing.T) {
	got := onePerZone([]api.Subnet{{ID: "subnet-2", Zone: "a"}, {ID: "subnet-1", Zone: "a"}, {ID: "subnet-3", Zone: "b"}})
	if len(got) != 2 || got[0].ID != "subnet-1" || got[1].ID != "subnet-3" {
		t.Errorf("onePerZone = %+v", got)
	}
}
