package e2e

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/heraldlb/herald/bare-metal/api/v1alpha1"
	"github.com/heraldlb/herald/e2e/cluster"
)

var (
	bgpPeerGVR = v1alpha1.SchemeGroupVersion.WithResource("bgppeers")
	bgpAdvGVR  = v1alpha1.SchemeGroupVersion.WithResource("bgpadvertisements")
)

// The BGPPeer and BGPAdvertisement CRDs as the chart ships them, on the
// real apiserver: the samples in bare-metal/api/v1alpha1/testdata/bgppeer
// and .../bgpadvertisement are accepted (valid/, with their defaults) or
// refused with the message of their "# expect:" line (invalid/), and
// kubectl shows the printer columns.
func TestBGPCRDs(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Options{})
	installCRDs(t, c)
	kubectl(t, c, "wait", "--for=condition=Established", "--timeout=60s", "crd/bgppeers.herald.dev", "crd/bgpadvertisements.herald.dev")
	dyn := dynamic.NewForConfigOrDie(c.Config)
	peers, ads := dyn.Resource(bgpPeerGVR), dyn.Resource(bgpAdvGVR)

	for _, s := range loadSamples(t, "bgppeer/valid") {
		t.Run(s.name, func(t *testing.T) {
			got, err := dryRunCreate(peers, s.obj)
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if port, _, _ := unstructured.NestedInt64(got.Object, "spec", "peerPort"); port == 0 {
				t.Errorf("spec.peerPort not defaulted: %v", got.Object["spec"])
			}
			if _, set, _ := unstructured.NestedMap(got.Object, "spec", "passwordSecret"); set {
				if key, _, _ := unstructured.NestedString(got.Object, "spec", "passwordSecret", "key"); key == "" {
					t.Errorf("spec.passwordSecret.key not defaulted")
				}
			}
		})
	}
	checkInvalidSamples(t, peers, "bgppeer/invalid")
	for _, s := range loadSamples(t, "bgpadvertisement/valid") {
		t.Run(s.name, func(t *testing.T) {
			got, err := dryRunCreate(ads, s.obj)
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			v4, _, _ := unstructured.NestedInt64(got.Object, "spec", "aggregationLength")
			v6, _, _ := unstructured.NestedInt64(got.Object, "spec", "aggregationLengthV6")
			if s.name == "bgpadvertisement/valid/every-pool.yaml" && (v4 != 32 || v6 != 128) {
				t.Errorf("aggregation lengths defaulted to %d and %d, want 32 and 128", v4, v6)
			}
		})
	}
	checkInvalidSamples(t, ads, "bgpadvertisement/invalid")
	t.Run("the README's examples", func(t *testing.T) {
		for _, obj := range readmeObjects(t, "BGPPeer", "BGPAdvertisement") {
			r := map[string]dynamic.ResourceInterface{"BGPPeer": peers, "BGPAdvertisement": ads}[obj.GetKind()]
			if _, err := dryRunCreate(r, obj); err != nil {
				t.Errorf("README's %s %s rejected: %v", obj.GetKind(), obj.GetName(), err)
			}
		}
	})

	t.Run("per-node status entries and printer columns", func(t *testing.T) { testBGPPeerStatus(t, c, peers) })
	kubectl(t, c, "apply", "-f", samplesDir+"/bgpadvertisement/valid/full.yaml")
	header, rows := table(t, kubectl(t, c, "get", "bgpadv", "-o", "wide"))
	wantHeader := []string{"NAME", "POOLS", "PEERS", "COMMUNITIES", "LOCAL PREF", "AGGREGATION", "NODE SELECTORS", "VALID", "AGE"}
	if !slices.Equal(header, wantHeader) || len(rows) != 1 {
		t.Fatalf("kubectl get bgpadv -o wide: columns %q, rows %q; want columns %q and one row", header, rows, wantHeader)
	}
	want := map[string]string{"NAME": "full", "PEERS": `["router-a","router-b"]`, "LOCAL PREF": "200", "AGGREGATION": "24"}
	for i, column := range header {
		if w, ok := want[column]; ok && rows[0][i] != w {
			t.Errorf("column %s = %q, want %q", column, rows[0][i], w)
		}
	}
}

// testBGPPeerStatus writes two nodes' status entries the way herald-agent
// does, each node with its own field manager (server-side apply on the
// status subresource), and checks that neither erases the other and that
// a node withdrawing its entry removes only its own.
func testBGPPeerStatus(t *testing.T, c *cluster.Cluster, peers dynamic.ResourceInterface) {
	ctx := context.Background()
	kubectl(t, c, "apply", "-f", samplesDir+"/bgppeer/valid/full.yaml")
	apply := func(node, state string) {
		t.Helper()
		entry := map[string]any{"node": node, "sessionState": state, "bfdState": "Up", "advertisedPrefixes": 2,
			"lastTransitionTime": "2026-01-01T00:00:00Z"}
		var nodes []any
		if state != "" {
			nodes = []any{entry}
		}
		body, err := json.Marshal(map[string]any{"apiVersion": "herald.dev/v1alpha1", "kind": "BGPPeer",
			"metadata": map[string]any{"name": "full"}, "status": map[string]any{"nodes": nodes}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := peers.Patch(ctx, "full", types.ApplyPatchType, body,
			metav1.PatchOptions{FieldManager: "herald-agent-bgp-" + node, Force: ptr.To(true)}, "status"); err != nil {
			t.Fatalf("node %s: status apply refused: %v", node, err)
		}
	}
	nodeStates := func() map[string]string {
		t.Helper()
		obj, err := peers.Get(ctx, "full", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		entries, _, _ := unstructured.NestedSlice(obj.Object, "status", "nodes")
		out := map[string]string{}
		for _, e := range entries {
			m := e.(map[string]any)
			out[m["node"].(string)] = m["sessionState"].(string)
		}
		return out
	}
	apply("n1", "Established")
	apply("n2", "Active")
	if got := nodeStates(); got["n1"] != "Established" || got["n2"] != "Active" || len(got) != 2 {
		t.Fatalf("status.nodes after two nodes applied: %v", got)
	}
	apply("n1", "") // n1 no longer opens the session
	if got := nodeStates(); len(got) != 1 || got["n2"] != "Active" {
		t.Fatalf("status.nodes after n1 withdrew its entry: %v, want only n2", got)
	}

	header, rows := table(t, kubectl(t, c, "get", "bgppeer", "-o", "wide"))
	wantHeader := []string{"NAME", "ADDRESS", "PEER ASN", "LOCAL ASN", "PORT", "HOLD TIME", "BFD INTERVAL", "NODE SELECTORS", "VALID", "AGE"}
	if !slices.Equal(header, wantHeader) || len(rows) != 1 {
		t.Fatalf("kubectl get bgppeer -o wide: columns %q, rows %q; want columns %q and one row", header, rows, wantHeader)
	}
	want := map[string]string{"NAME": "full", "ADDRESS": "192.0.2.1", "PEER ASN": "64500", "LOCAL ASN": "4200000000",
		"PORT": "1179", "HOLD TIME": "9s", "BFD INTERVAL": "100ms"}
	for i, column := range header {
		if w, ok := want[column]; ok && rows[0][i] != w {
			t.Errorf("column %s = %q, want %q", column, rows[0][i], w)
		}
	}
}

// readmeObjects returns the objects of the given kinds in the README's
// yaml blocks, so that what users copy from it is checked.
func readmeObjects(t *testing.T, kinds ...string) []*unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []*unstructured.Unstructured
	blocks := strings.Split(string(data), "```yaml\n")
	for _, b := range blocks[1:] {
		block, _, _ := strings.Cut(b, "```")
		for _, doc := range strings.Split(block, "\n---\n") {
			obj := &unstructured.Unstructured{}
			if err := sigsyaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
				t.Fatalf("README yaml block: %v\n%s", err, doc)
			}
			if slices.Contains(kinds, obj.GetKind()) {
				out = append(out, obj)
			}
		}
	}
	if len(out) < len(kinds) {
		t.Fatalf("the README has %d objects of kinds %v, want one of each at least", len(out), kinds)
	}
	return out
}
