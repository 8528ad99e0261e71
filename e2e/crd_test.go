package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/heraldlb/herald/e2e/cluster"
)

// The IPAddressPool CRD's validation lives in the generated YAML (OpenAPI
// schema and CEL rules), which only a real kube-apiserver evaluates: these
// tests install the CRD exactly as the chart ships it and feed it the samples
// in bare-metal/api/v1alpha1/testdata:
//
//	valid/    accepted, with autoAssign and avoidBuggyIPs defaulted;
//	invalid/  rejected, the message containing the file's "# expect:" line
//	          (each rule is shown to fire on an input of its own);
//	gaps/     accepted today although wrong, for the reason in the file's
//	          "# gap:" line: herald-ccm has to catch these.

const (
	crdDir      = "../charts/herald/crds"
	samplesDir  = "../bare-metal/api/v1alpha1/testdata"
	poolCRDName = "ipaddresspools.herald.dev"
)

var poolResource = schema.GroupVersionResource{Group: "herald.dev", Version: "v1alpha1", Resource: "ipaddresspools"}

// sample is one YAML file of testdata with its directives.
type sample struct {
	name string // e.g. "invalid/cidr-garbage.yaml"
	obj  *unstructured.Unstructured
	// directives holds the "# key: value" comment lines (expect, gap).
	directives map[string]string
}

var directive = regexp.MustCompile(`^# ([a-z]+): (.+)$`)

func loadSamples(t testing.TB, kind string) []sample {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(samplesDir, kind, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples in %s/%s (%v)", samplesDir, kind, err)
	}
	var samples []sample
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := sample{name: kind + "/" + filepath.Base(f), obj: &unstructured.Unstructured{}, directives: map[string]string{}}
		if err := yaml.Unmarshal(data, &s.obj.Object); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		lines := bufio.NewScanner(bytes.NewReader(data))
		for lines.Scan() {
			if m := directive.FindStringSubmatch(lines.Text()); m != nil {
				s.directives[m[1]] = m[2]
			}
		}
		samples = append(samples, s)
	}
	return samples
}

// installCRDs applies charts/herald/crds as an admin would and waits until
// the apiserver serves the new resource.
func installCRDs(t testing.TB, c *cluster.Cluster) {
	t.Helper()
	kubectl(t, c, "apply", "--server-side", "-f", crdDir)
	kubectl(t, c, "wait", "--for=condition=Established", "--timeout=60s", "crd/"+poolCRDName)
}

// dryRunCreate asks the apiserver to validate and default obj without
// storing it. Field validation is Strict, as with kubectl, so that a
// misspelt field is an error rather than a warning.
func dryRunCreate(pools dynamic.ResourceInterface, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	return pools.Create(context.Background(), obj, metav1.CreateOptions{
		DryRun: []string{metav1.DryRunAll}, FieldValidation: metav1.FieldValidationStrict})
}

func TestIPAddressPoolCRD(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Options{})
	installCRDs(t, c)
	pools := dynamic.NewForConfigOrDie(c.Config).Resource(poolResource)

	for _, s := range loadSamples(t, "valid") {
		t.Run(s.name, func(t *testing.T) {
			got, err := dryRunCreate(pools, s.obj)
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			// What the file sets is kept; what it leaves out is defaulted.
			for field, def := range map[string]bool{"autoAssign": true, "avoidBuggyIPs": false} {
				want, set, _ := unstructured.NestedBool(s.obj.Object, "spec", field)
				if !set {
					want = def
				}
				if v, found, _ := unstructured.NestedBool(got.Object, "spec", field); !found || v != want {
					t.Errorf("spec.%s = %v (present: %v), want %v", field, v, found, want)
				}
			}
		})
	}
	checkInvalidSamples(t, pools, "invalid")
	for _, s := range loadSamples(t, "gaps") {
		t.Run(s.name, func(t *testing.T) {
			if s.directives["gap"] == "" {
				t.Fatal(`no "# gap: <why the CRD accepts it, who catches it>" line`)
			}
			// A gap that starts failing was closed: move the file to invalid/.
			if _, err := dryRunCreate(pools, s.obj); err != nil {
				t.Fatalf("rejected, so no longer a gap (move it to invalid/): %v", err)
			}
		})
	}
	t.Run("status and printer columns", func(t *testing.T) { testPoolStatus(t, c, pools) })
}

// checkInvalidSamples creates each sample of dir (dry run) and checks it
// is refused with the message of its "# expect:" line.
func checkInvalidSamples(t *testing.T, res dynamic.ResourceInterface, dir string) {
	for _, s := range loadSamples(t, dir) {
		t.Run(s.name, func(t *testing.T) {
			want := s.directives["expect"]
			if want == "" {
				t.Fatal(`no "# expect: <part of the error>" line`)
			}
			_, err := dryRunCreate(res, s.obj)
			var status apierrors.APIStatus
			if !errors.As(err, &status) {
				t.Fatalf("accepted or failed without a status: %v", err)
			}
			if message := status.Status().Message; !strings.Contains(message, want) {
				t.Fatalf("rejected without %q: %s", want, message)
			}
			t.Log(status.Status().Message)
		})
	}
}

// testPoolStatus stores a pool, writes a status through the status
// subresource as herald-ccm will, and reads it back through the printer
// columns that `kubectl get ipaddresspools` shows.
func testPoolStatus(t testing.TB, c *cluster.Cluster, pools dynamic.ResourceInterface) {
	ctx := context.Background()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "herald.dev/v1alpha1", "kind": "IPAddressPool",
		"metadata": map[string]any{"name": "dual"},
		"spec":     map[string]any{"addresses": []any{"192.0.2.0/28", "2001:db8::/64"}},
	}}
	if _, err := pools.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// 2^63-1: counts saturate there (see AddressCounts).
	status := `{"status":{"observedGeneration":1,
		"ipv4":{"total":16,"inUse":2,"free":14},
		"ipv6":{"total":9223372036854775807,"inUse":1,"free":9223372036854775807},
		"conditions":[
		{"type":"Ready","status":"True","reason":"Valid","message":"","lastTransitionTime":"2026-01-01T00:00:00Z"},
		{"type":"Conflicting","status":"False","reason":"NoOverlap","message":"","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}`
	if _, err := pools.Patch(ctx, "dual", types.MergePatchType, []byte(status), metav1.PatchOptions{}, "status"); err != nil {
		t.Fatalf("status update refused: %v", err)
	}
	negative := `{"status":{"ipv4":{"total":1,"inUse":2,"free":-1}}}`
	_, err := pools.Patch(ctx, "dual", types.MergePatchType, []byte(negative), metav1.PatchOptions{}, "status")
	if !apierrors.IsInvalid(err) {
		t.Errorf("status with free=-1: err = %v, want Invalid", err)
	}

	// The short name works, and -o wide adds the priority-1 columns.
	header, _ := table(t, kubectl(t, c, "get", "ipaddresspools"))
	wantHeader := []string{"NAME", "ADDRESSES", "IPV4 IN USE", "IPV4 FREE", "IPV6 IN USE", "IPV6 FREE", "READY", "CONFLICTING", "AGE"}
	if !slices.Equal(header, wantHeader) {
		t.Errorf("kubectl get ipaddresspools columns:\n got %q\nwant %q", header, wantHeader)
	}
	header, rows := table(t, kubectl(t, c, "get", "hpool", "-o", "wide"))
	wantHeader = slices.Insert(wantHeader, 2, "AUTO ASSIGN", "PRIORITY")
	if !slices.Equal(header, wantHeader) || len(rows) != 1 || len(rows[0]) != len(header) {
		t.Fatalf("kubectl get hpool -o wide: columns %q, rows %q; want columns %q and one row", header, rows, wantHeader)
	}
	want := map[string]string{"NAME": "dual", "ADDRESSES": `["192.0.2.0/28","2001:db8::/64"]`,
		"AUTO ASSIGN": "true", "PRIORITY": "", "IPV4 IN USE": "2", "IPV4 FREE": "14",
		"IPV6 IN USE": "1", "IPV6 FREE": "9223372036854775807", "READY": "True", "CONFLICTING": "False"}
	for i, column := range header {
		if w, ok := want[column]; ok && rows[0][i] != w {
			t.Errorf("column %s = %q, want %q", column, rows[0][i], w)
		}
	}
}

// table splits kubectl's human-readable output into the header and the
// rows. kubectl aligns every column at the offset of its name in the header
// (names are separated by at least two spaces, and contain at most one), so
// cells are cut at those offsets: an empty cell stays an empty string.
func table(t testing.TB, out string) (header []string, rows [][]string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	spans := regexp.MustCompile(`\S+( \S+)*`).FindAllStringIndex(lines[0], -1)
	cut := func(line string) []string {
		cells := make([]string, len(spans))
		for i, span := range spans {
			end := len(line)
			if i+1 < len(spans) {
				end = min(spans[i+1][0], len(line))
			}
			if span[0] < end {
				cells[i] = strings.TrimSpace(line[span[0]:end])
			}
		}
		return cells
	}
	for _, line := range lines[1:] {
		rows = append(rows, cut(line))
	}
	return cut(lines[0]), rows
}
