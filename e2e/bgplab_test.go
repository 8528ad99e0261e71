package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/bare-metal/speaker"
	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/e2e/labkit"
	"github.com/heraldlb/herald/e2e/netlab"
	"github.com/heraldlb/herald/e2e/routers"
)

// bgpEnv is labkit's BGP lab (three nodes with herald-agent announcing over
// BGP, a real router, a client behind it) with the tests' helpers.
type bgpEnv struct {
	*labkit.BGP
	t testing.TB
}

// routeWithin bounds waits for the router's table to follow a change: the
// goal is well under a second (BenchmarkBGPServiceCreation), sessions take
// a few seconds to come up, and a loaded CI machine gets slack.
const routeWithin = 30 * time.Second

func newBGPEnv(t testing.TB, kind routers.Kind, opts labkit.BGPOptions) *bgpEnv {
	t.Helper()
	netlab.SkipUnlessAble(t)
	routers.Require(t, kind)
	prefetchBinaries()
	c := cluster.StartForTest(t, cluster.Options{})
	opts.Bin, opts.CRDDir, opts.Dir, opts.Router = labBinaries(t), crdDir, t.TempDir(), kind
	return &bgpEnv{BGP: labkit.StartBGP(t, c, opts), t: t}
}

// waitNextHops waits until the router routes vip over exactly the nodes
// (none: no route) and returns when it saw it.
func (e *bgpEnv) waitNextHops(vip netip.Addr, nodes ...string) time.Time {
	e.t.Helper()
	at, err := e.WaitNextHops(vip, labkit.NodeAddrs(vip.Is6(), nodes...), 10*time.Millisecond, routeWithin)
	if err != nil {
		e.t.Fatal(err)
	}
	return at
}

// peer returns the BGPPeer "router".
func (e *bgpEnv) peer() *v1alpha1.BGPPeer {
	e.t.Helper()
	u, err := e.Dynamic.Resource(labkit.BGPPeerGVR).Get(context.Background(), "router", metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	var p v1alpha1.BGPPeer
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
		e.t.Fatal(err)
	}
	return &p
}

// waitPeer polls the BGPPeer until cond holds.
func (e *bgpEnv) waitPeer(what string, cond func(*v1alpha1.BGPPeer) bool) *v1alpha1.BGPPeer {
	e.t.Helper()
	var last *v1alpha1.BGPPeer
	waitFor(e.t, routeWithin, "BGPPeer router: "+what, func() bool {
		last = e.peer()
		return cond(last)
	})
	return last
}

// nodeStates renders the BGPPeer's per-node status entries.
func nodeStates(p *v1alpha1.BGPPeer) map[string]string {
	out := map[string]string{}
	for _, n := range p.Status.Nodes {
		out[n.Node] = n.SessionState + "/" + n.BFDState
	}
	return out
}

// allNodes are the lab's node names.
func allNodes() []string {
	var out []string
	for _, n := range labkit.L2Nodes {
		out = append(out, n.Name)
	}
	return out
}

// bgpCondition returns the Service's BGPAdvertised condition, if any.
func bgpCondition(svc *v1.Service) *metav1.Condition {
	return meta.FindStatusCondition(svc.Status.Conditions, speaker.ConditionBGPAdvertised)
}

// entries asks vip n times from the client and counts the answers by the
// node they entered by; a request that fails fails the test.
func (e *bgpEnv) entries(vip netip.Addr, n int) map[string]int {
	e.t.Helper()
	out := map[string]int{}
	for i := range n {
		a, err := labkit.Get(e.Client.Netns, hostPort(vip.String(), 80), labkit.Attempt)
		if err != nil {
			e.t.Fatalf("request %d of %d to %s: %v", i+1, n, vip, err)
		}
		out[entryKey(a)]++
	}
	return out
}

// frr returns the lab's router as FRR, for its session details.
func (e *bgpEnv) frr() routers.FRRRouter {
	e.t.Helper()
	f, ok := e.Router.(routers.FRRRouter)
	if !ok {
		e.t.Fatalf("the router is %s, not FRR", e.Router.Kind())
	}
	return f
}

// md5Failures reads the router namespace's TcpExtTCPMD5Failure counter:
// segments the kernel dropped because their MD5 signature was wrong.
func (e *bgpEnv) md5Failures() int {
	e.t.Helper()
	out, err := e.RouterHost.Run("cat", "/proc/net/netstat")
	if err != nil {
		e.t.Fatal(err)
	}
	n, err := netstatCounter(out, "TcpExt", "TCPMD5Failure")
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// netstatCounter finds one counter in /proc/net/netstat's text: pairs of
// lines, names then values, both starting with the group ("TcpExt:").
func netstatCounter(text, group, name string) (int, error) {
	lines := strings.Split(text, "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != group+":" || len(values) != len(names) || values[0] != group+":" {
			continue
		}
		if j := slices.Index(names, name); j > 0 {
			return strconv.Atoi(values[j])
		}
	}
	return 0, fmt.Errorf("no %s %s in /proc/net/netstat", group, name)
}
