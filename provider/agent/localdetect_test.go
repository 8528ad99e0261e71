package agent

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
)

// TestAgentLocalDetectionFromNodePodCIDRs runs mode NodeCIDR: with no pod
// ranges on the Node nothing is taken for local and the Node gets one
// Warning; once the Node has them, they tell local traffic.
func TestAgentLocalDetectionFromNodePodCIDRs(t *testing.T) {
	events := record.NewFakeRecorder(10)
	h := newHarnessWith(t, func(c *Config, d *Deps) {
		c.LocalFromNode = true
		d.Recorder = events
	}, testNode(), webService(), webSlice("192.0.2.101", "node-b"))
	ctx := h.startInformers(t)

	const (
		ranges   = "add element inet herald podcidrs4 { 192.0.2.0/26 }"
		masqRule = "add rule inet herald masq-unless-pod4 ip saddr @podcidrs4 return"
		masqElem = "add element inet herald masqpod4 { 198.51.100.1 . tcp . 80 }"
		bypass   = `add element inet herald podsvc4-1 { 203.0.113.1 . tcp . 80 comment "ns/web:http" }`
	)
	r, err := h.syncNow(t, ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{ranges, masqRule, masqElem, bypass} {
		if strings.Contains(r.dump, line) {
			t.Errorf("without pod ranges the table has %q", line)
		}
	}
	select {
	case e := <-events.Events:
		if !strings.HasPrefix(e, "Warning "+ReasonNoPodCIDRs+" ") || !strings.Contains(e, "no spec.podCIDRs") {
			t.Errorf("event %q", e)
		}
	default:
		t.Error("no Warning Event for a Node without pod ranges")
	}
	if _, err := h.syncNow(t, ctx); err != nil {
		t.Fatal(err)
	}
	if len(events.Events) != 0 {
		t.Errorf("the warning repeats at every sync: %q", <-events.Events)
	}

	n := testNode()
	n.Spec.PodCIDRs = []string{"192.0.2.0/26"}
	h.drainTrigger()
	if _, err := h.client.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	recv(t, h.agent.runner.trigger, "the Node update")
	r, err = h.syncNow(t, ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !containsAll(r.dump, []string{ranges, masqRule, masqElem, bypass}) {
		t.Errorf("with the Node's pod ranges the table lacks local detection:\n%s", r.dump)
	}
	if len(events.Events) != 0 {
		t.Errorf("unexpected event %q", <-events.Events)
	}
}
