package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/e2e/netlab"
)

// newNetEnv builds the root tier's lab and starts herald-agent on each node:
//
//	client 192.0.2.100 ─┐
//	                    ├─ LAN bridge (192.0.2.0/24)
//	n1 192.0.2.11 ──────┤    pods a1 198.51.100.1, a2 198.51.100.2
//	n2 192.0.2.12 ──────┘    pod  b1 198.51.100.17
//
// The client routes each node's pods (and the VIP, 198.51.100.200) via that
// node, as a router announcing them would; nodes route each other's pods.
func newNetEnv(t *testing.T) *netEnv {
	t.Helper()
	netlab.SkipUnlessAble(t)
	c := cluster.StartForTest(t, cluster.Options{})
	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	lab := netlab.New(t)
	e := &netEnv{c: c, client: client, lab: lab, apiAddr: strings.TrimPrefix(c.Config.Host, "https://"),
		nodes: map[string]*netlab.Node{}, pods: map[string]*netlab.Host{}, podNode: map[string]string{},
		agents: map[string]*cluster.Process{}, dir: t.TempDir()}

	cl := lab.AddClient("client", clientIP)
	e.pods["client"] = cl
	n1 := lab.AddNode("n1", netip.MustParseAddr("192.0.2.11"))
	n2 := lab.AddNode("n2", netip.MustParseAddr("192.0.2.12"))
	e.nodes["n1"], e.nodes["n2"] = n1, n2
	for _, p := range []struct {
		node *netlab.Node
		name string
		ip   string
	}{{n1, "a1", "198.51.100.1"}, {n1, "a2", "198.51.100.2"}, {n2, "b1", "198.51.100.17"}} {
		e.pods[p.name] = p.node.AddPod(p.name, netip.MustParseAddr(p.ip))
		e.podNode[p.name] = p.node.Short
	}
	n1Pods, n2Pods := netip.MustParsePrefix("198.51.100.0/28"), netip.MustParsePrefix("198.51.100.16/28")
	lab.Route(cl, n1Pods, n1.IP)
	lab.Route(cl, n2Pods, n2.IP)
	lab.Route(cl, netip.PrefixFrom(vip, 32), n1.IP)
	lab.Route(&n1.Host, n2Pods, n2.IP)
	lab.Route(&n2.Host, n1Pods, n1.IP)

	for _, p := range []string{"a1", "a2", "b1"} {
		e.startEcho(t, e.pods[p])
	}
	// The plumbing works before herald is involved: the client reaches every
	// pod directly and the pod sees the client's own address.
	for _, p := range []string{"a1", "a2", "b1"} {
		addr := hostPort(e.pods[p].IP.String(), echoPort)
		eventually(t, "client reaches "+p+" directly", func() (answer, error) { return get(cl.Netns, addr) },
			func(a answer) bool { return a.pod == p && a.from.Addr() == clientIP })
	}

	for _, n := range []*netlab.Node{n1, n2} {
		e.createNode(t, n)
		lab.Forward(n.Netns, e.apiAddr)
		e.startAgent(t, n.Short)
	}
	for _, n := range []string{"n1", "n2"} {
		e.waitAgentReady(t, n)
	}
	return e
}

func (e *netEnv) client4() *netlab.Netns { return e.pods["client"].Netns }

func (e *netEnv) createService(t *testing.T, svc *v1.Service) *v1.Service {
	t.Helper()
	return createService(t, e.client, svc)
}

// TestNetnsDataplane is the root network tier: real packets through real
// nftables rules that herald-agent derives from a real apiserver.
func TestNetnsDataplane(t *testing.T) {
	began := time.Now()
	e := newNetEnv(t)
	t.Logf("lab with two agents ready in %v", time.Since(began).Round(time.Millisecond))
	n1, n2, cl := e.nodes["n1"].Netns, e.nodes["n2"].Netns, e.client4()
	all := map[string]bool{"a1": true, "a2": true, "b1": true}
	inSet := func(set map[string]bool) func(answer) error {
		return func(a answer) error {
			if !set[a.pod] {
				return fmt.Errorf("answer from %s %v, want one of %v", a.pod, a.from, set)
			}
			return nil
		}
	}

	web := e.createService(t, echoService("web", v1.ServiceTypeNodePort))
	e.setEndpoints(t, "web", "a1", "a2", "b1")
	webTCP := hostPort(web.Spec.ClusterIP, portOf(web, "http", false))

	t.Run("ClusterIP from a node", func(t *testing.T) {
		for _, n := range []*netlab.Netns{n1, n2} {
			eventually(t, "ClusterIP from "+n.Name, func() (answer, error) { return get(n, webTCP) }, anyAnswer)
			seen := podsOf(t, 20, func() (answer, error) { return get(n, webTCP) }, inSet(all))
			if len(seen) < 2 {
				t.Errorf("20 connections from %s all went to %v: no load balancing", n.Name, seen)
			}
		}
	})

	t.Run("NodePort from an outside client", func(t *testing.T) {
		for _, node := range []*netlab.Node{e.nodes["n1"], e.nodes["n2"]} {
			addr := hostPort(node.IP.String(), portOf(web, "http", true))
			eventually(t, "NodePort on "+node.Short, func() (answer, error) { return get(cl, addr) }, anyAnswer)
			seen := podsOf(t, 20, func() (answer, error) { return get(cl, addr) }, func(a answer) error {
				if err := inSet(all)(a); err != nil {
					return err
				}
				// Policy Cluster: the pod may be on the other node, so the
				// node masquerades; the pod sees a node, never the client.
				if a.from.Addr() == clientIP {
					return fmt.Errorf("%s saw the client address %v under externalTrafficPolicy Cluster", a.pod, a.from)
				}
				return nil
			})
			if len(seen) < 2 {
				t.Errorf("20 connections to %s all went to %v", addr, seen)
			}
		}
	})

	t.Run("UDP through ClusterIP and NodePort", func(t *testing.T) {
		clusterUDP := hostPort(web.Spec.ClusterIP, portOf(web, "udp", false))
		nodeUDP := hostPort(e.nodes["n2"].IP.String(), portOf(web, "udp", true))
		eventually(t, "UDP ClusterIP from n1", func() (answer, error) { return askUDP(n1, clusterUDP) }, anyAnswer)
		podsOf(t, 10, func() (answer, error) { return askUDP(n1, clusterUDP) }, inSet(all))
		eventually(t, "UDP NodePort from the client", func() (answer, error) { return askUDP(cl, nodeUDP) }, anyAnswer)
		podsOf(t, 10, func() (answer, error) { return askUDP(cl, nodeUDP) }, inSet(all))
	})
}

var _ = errors.Is
var _ = syscall.ECONNREFUSED
var _ = http.StatusOK
var _ = strconv.Itoa
var _ = ptr.To[int]
var _ = metav1.Now
var _ = wait.PollUntilContextTimeout
var _ context.Context
