package e2e

import (
	"slices"
	"testing"

	"k8s.io/client-go/dynamic"

	"github.com/heraldlb/herald/e2e/cluster"
)

// The L2Advertisement CRD as the chart ships it, on the real apiserver:
// the samples in bare-metal/api/v1alpha1/testdata/l2advertisement are
// accepted (valid/) or refused with the message of their "# expect:" line
// (invalid/), and `kubectl get l2adv` shows the printer columns.
func TestL2AdvertisementCRD(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Options{})
	installCRDs(t, c)
	kubectl(t, c, "wait", "--for=condition=Established", "--timeout=60s", "crd/l2advertisements.herald.dev")
	ads := dynamic.NewForConfigOrDie(c.Config).Resource(adGVR)

	for _, s := range loadSamples(t, "l2advertisement/valid") {
		t.Run(s.name, func(t *testing.T) {
			if _, err := dryRunCreate(ads, s.obj); err != nil {
				t.Fatalf("rejected: %v", err)
			}
		})
	}
	checkInvalidSamples(t, ads, "l2advertisement/invalid")

	kubectl(t, c, "apply", "-f", samplesDir+"/l2advertisement/valid/full.yaml")
	header, rows := table(t, kubectl(t, c, "get", "l2adv", "-o", "wide"))
	wantHeader := []string{"NAME", "POOLS", "POOL SELECTORS", "NODE SELECTORS", "INTERFACES", "AGE"}
	if !slices.Equal(header, wantHeader) || len(rows) != 1 {
		t.Fatalf("kubectl get l2adv -o wide: columns %q, rows %q; want columns %q and one row", header, rows, wantHeader)
	}
	want := map[string]string{"NAME": "full", "POOLS": `["lab","config-pool.v2"]`,
		"INTERFACES": `["eth0","bond0.100","enp0s31f6","vlan120"]`}
	for i, column := range header {
		if w, ok := want[column]; ok && rows[0][i] != w {
			t.Errorf("column %s = %q, want %q", column, rows[0][i], w)
		}
	}
}
