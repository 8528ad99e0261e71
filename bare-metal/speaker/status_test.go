package speaker

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/bare-metal/election"
)

func TestDesiredCondition(t *testing.T) {
	a4, a6 := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")
	on := map[netip.Addr][]string{a4: {"eth0"}, a6: {"bond0", "eth0"}}
	owned := &group{addrs: []netip.Addr{a4, a6}, decision: election.Decision{Owner: "n1", Announce: true, Reason: election.ReasonOwner}}
	nobody := &group{addrs: []netip.Addr{a4}, reporter: "n2", decision: election.Decision{Reason: election.ReasonNoLocalEndpoints},
		candidates: []election.Candidate{{Node: "n2", Ineligible: election.ReasonNoLocalEndpoints}, {Node: "n1", Ineligible: election.ReasonCordoned}}}
	other := &group{addrs: []netip.Addr{a4}, decision: election.Decision{Owner: "n3", Reason: election.ReasonNotOwner}}
	for _, tt := range []struct {
		name   string
		self   string
		g      *group
		write  bool
		status metav1.ConditionStatus
		reason string
		msg    string
	}{
		{"the owner reports itself with its interfaces", "n1", owned, true, metav1.ConditionTrue, ReasonLayer2,
			"Announced by node n1 with ARP/NDP: 192.0.2.10 on eth0; 2001:db8::10 on bond0,eth0"},
		{"the reporter says why nobody announces, nodes by name", "n2", nobody, true, metav1.ConditionFalse, "NoCandidate",
			"No node may announce 192.0.2.10: n1 Cordoned, n2 NoLocalEndpoints"},
		{"a node that is neither stays quiet", "n1", nobody, false, "", "", ""},
		{"a non-owner stays quiet", "n1", other, false, "", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, write := desiredCondition(tt.self, tt.g, on)
			if write != tt.write {
				t.Fatalf("write = %v, want %v", write, tt.write)
			}
			if !write {
				return
			}
			if c.Type != ConditionAnnounced || c.Status != tt.status || c.Reason != tt.reason || c.Message != tt.msg {
				t.Errorf("condition %+v\nwant status %s reason %s message %q", c, tt.status, tt.reason, tt.msg)
			}
		})
	}
}

func TestCandidateSummaryIsBounded(t *testing.T) {
	var cands []election.Candidate
	for i := range 20 {
		cands = append(cands, election.Candidate{Node: fmt.Sprintf("n%02d", i), Ineligible: election.ReasonNotReady})
	}
	got := candidateSummary(cands)
	if !strings.HasSuffix(got, "and 12 more") || strings.Count(got, "NotReady") != maxListedNodes {
		t.Errorf("summary %q: want %d nodes then \"and 12 more\"", got, maxListedNodes)
	}
}

func TestDefaultRouteInterface(t *testing.T) {
	for _, tt := range []struct {
		ipv4 bool
		want string
	}{{true, "bond0"}, {false, "bond0"}} {
		got, err := defaultRouteInterface("testdata/procnet", tt.ipv4)
		if err != nil || got != tt.want {
			t.Errorf("defaultRouteInterface(ipv4=%v) = %q, %v; want %q", tt.ipv4, got, err, tt.want)
		}
	}
	// Only an unreachable default on lo, as the kernel installs: none.
	dir := t.TempDir()
	lo := "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
	if err := os.WriteFile(filepath.Join(dir, "ipv6_route"), []byte(lo), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := defaultRouteInterface(dir, false); !errors.Is(err, ErrNoInterface) {
		t.Errorf("with only lo's unreachable default: err = %v, want ErrNoInterface", err)
	}
	// A route that is down is not the default.
	down := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n eth9\t00000000\t0102000A\t0002\t0\t0\t0\t00000000\n"
	if err := os.WriteFile(filepath.Join(dir, "route"), []byte(down), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := defaultRouteInterface(dir, true); !errors.Is(err, ErrNoInterface) {
		t.Errorf("with a default route that is not up: err = %v, want ErrNoInterface", err)
	}
}

// The condition writers apply exactly their condition (or none, which
// removes it), in the shape typed apply configurations had: nothing else
// of the Service's status, so no other field becomes theirs.
func TestServiceStatusApply(t *testing.T) {
	then := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", Generation: 3},
		Status: v1.ServiceStatus{Conditions: []metav1.Condition{{Type: ConditionAnnounced, Status: metav1.ConditionTrue, LastTransitionTime: then}},
			LoadBalancer: v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{{IP: "192.0.2.10"}}}}}
	cond := &metav1.Condition{Type: ConditionAnnounced, Status: metav1.ConditionTrue, Reason: ReasonLayer2, Message: "m"}
	for _, tc := range []struct {
		name string
		cond *metav1.Condition
		want string
	}{
		{"same status keeps the transition time", cond, `{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"ns"},` +
			`"status":{"conditions":[{"type":"herald.dev/Announced","status":"True","observedGeneration":3,` +
			`"lastTransitionTime":"2026-01-02T03:04:05Z","reason":"Layer2","message":"m"}]}}`},
		{"nil removes the condition", nil, `{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"ns"},"status":{}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := json.Marshal(serviceStatusApply(svc, ConditionAnnounced, tc.cond))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("applied\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
	flipped := *cond
	flipped.Status = metav1.ConditionFalse
	if c := serviceStatusApply(svc, ConditionAnnounced, &flipped).Status.Conditions[0]; !c.LastTransitionTime.After(then.Time) {
		t.Errorf("a changed status kept the transition time %v", c.LastTransitionTime)
	}
}
