package e2e

import (
	"context"
	"net/netip"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/e2e/netlab"
	"github.com/heraldlb/herald/provider/agent"
)

// TestNetnsLocalDetection runs n1's herald-agent in each
// --detect-local-mode and sends real traffic from n1's pods: a1 behind its
// own veth (v-a1, as Calico attaches pods) and c1 behind the bridge cbr0
// (as kubenet or the bridge CNI do). A pod the mode recognises reaches a
// ClusterIP with its own address, and an externalTrafficPolicy Local load
// balancer address although n1 has no endpoint, while a pod it does not
// recognise, and the off-cluster client, are masqueraded (and dropped at the
// load balancer address). The only endpoint, b1, is on n2, so every packet
// crosses the LAN and b1 reports the source it saw.
func TestNetnsLocalDetection(t *testing.T) {
	e := newNetEnv(t)
	n1, cl := e.nodes["n1"], e.client4()
	c1 := n1.AddBridgedPod("cbr0", "c1", netip.MustParseAddr("198.51.100.3"))
	e.pods["c1"], e.podNode["c1"] = c1, "n1"

	svc := e.createService(t, echoService("detect", v1.ServiceTypeClusterIP))
	e.setEndpoints(t, "detect", "b1")
	clusterIP := hostPort(svc.Spec.ClusterIP, portOf(svc, "http", false))
	// The client reaches the ClusterIP through n1, as a router sending
	// the Service range to the nodes would.
	e.lab.Route(e.pods["client"], netip.PrefixFrom(netip.MustParseAddr(svc.Spec.ClusterIP), 32), n1.IP)

	lb := echoService("detect-lb", v1.ServiceTypeLoadBalancer)
	lb.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	lb = e.createService(t, lb)
	lb.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: vip.String(), IPMode: ptr.To(v1.LoadBalancerIPModeVIP)}}
	if _, err := e.client.CoreV1().Services("default").UpdateStatus(context.Background(), lb, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.setEndpoints(t, "detect-lb", "b1")
	lbAddr := hostPort(vip.String(), portOf(lb, "http", false))

	// dropped checks that pod p gets no exception to the Local policy: n1
	// has no endpoint, so the LB address drops its SYN.
	dropped := func(t *testing.T, p string) {
		t.Helper()
		if dur, err := dialTCP(e.pods[p].Netns, lbAddr, 300*time.Millisecond); !isTimeout(err) {
			t.Errorf("%s to the ETP Local LB address: %v after %v, want a timeout (drop)", p, err, dur)
		}
	}
	// check waits until b1 sees each of n1's pods as want says: from its
	// own address (taken for local) or from n1's (masqueraded).
	check := func(t *testing.T, local, masqueraded []string) {
		t.Helper()
		for _, p := range local {
			e.seenBy(t, p+" to the ClusterIP", e.pods[p].Netns, clusterIP, e.pods[p].IP)
			e.seenBy(t, p+" to the ETP Local LB address", e.pods[p].Netns, lbAddr, e.pods[p].IP)
		}
		for _, p := range masqueraded {
			e.seenBy(t, p+" to the ClusterIP", e.pods[p].Netns, clusterIP, n1.IP)
			dropped(t, p)
		}
		e.seenBy(t, "the off-cluster client to the ClusterIP", cl, clusterIP, n1.IP)
	}

	for _, m := range []struct {
		name            string
		flags           []string
		local, notLocal []string
	}{
		// newNetEnv's agents run in the default mode, ClusterCIDR, with
		// --cluster-cidr=198.51.100.0/24.
		{"ClusterCIDR", nil, []string{"a1", "c1"}, nil},
		{"BridgeInterface", []string{"--detect-local-mode=BridgeInterface", "--pod-bridge-interface=cbr0"},
			[]string{"c1"}, []string{"a1"}},
		// c1's veth is v-c1 too, but routed packets come in through cbr0.
		{"InterfaceNamePrefix", []string{"--detect-local-mode=InterfaceNamePrefix", "--pod-interface-name-prefix=v-"},
			[]string{"a1"}, []string{"c1"}},
	} {
		t.Run(m.name, func(t *testing.T) {
			if m.flags != nil {
				e.restartAgent(t, "n1", m.flags...)
			}
			check(t, m.local, m.notLocal)
		})
	}

	t.Run("NodeCIDR", func(t *testing.T) {
		e.restartAgent(t, "n1", "--detect-local-mode=NodeCIDR")
		// n1 has no spec.podCIDRs yet: nothing is detected, and the Node
		// says why. As kube-proxy without a detector, herald then
		// masquerades nothing (the pods keep their address) and makes
		// no exception for pods.
		waitNodeEvent(t, e.client, "n1", agent.ReasonNoPodCIDRs)
		for _, p := range []string{"a1", "c1"} {
			e.seenBy(t, p+" to the ClusterIP", e.pods[p].Netns, clusterIP, e.pods[p].IP)
			dropped(t, p)
		}

		// The node IPAM controller's part: the agent takes the ranges
		// without a restart.
		node, err := e.client.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		node.Spec.PodCIDRs = []string{"198.51.100.0/28"}
		node.Spec.PodCIDR = node.Spec.PodCIDRs[0]
		if _, err := e.client.CoreV1().Nodes().Update(context.Background(), node, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		check(t, []string{"a1", "c1"}, nil)
	})
}

// seenBy waits until a request from ns to addr reaches b1 from the source
// address want.
func (e *netEnv) seenBy(t *testing.T, what string, ns *netlab.Netns, addr string, want netip.Addr) {
	t.Helper()
	eventually(t, what+" seen from "+want.String(), func() (answer, error) { return get(ns, addr) },
		func(a answer) bool { return a.Pod == "b1" && a.From.Addr() == want })
}

// waitNodeEvent waits for an Event with reason on the Node.
func waitNodeEvent(t *testing.T, client kubernetes.Interface, node, reason string) {
	t.Helper()
	sel := fields.Set{"involvedObject.kind": "Node", "involvedObject.name": node, "reason": reason}.String()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, waitTimeout, true,
		func(ctx context.Context) (bool, error) {
			evs, err := client.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: sel})
			return err == nil && len(evs.Items) > 0, nil
		})
	if err != nil {
		t.Fatalf("no Event %s on Node %s within %v", reason, node, waitTimeout)
	}
}
