package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/heraldlb/herald/e2e/cluster"
	"github.com/heraldlb/herald/e2e/labkit"
)

// docsWithExamples are the Markdown files whose YAML blocks a user copies:
// every block in them is checked, so none can drift from the chart.
var docsWithExamples = []string{"../README.md", chartDir + "/README.md"}

// docExample is one ```yaml block of a Markdown file.
type docExample struct {
	file string
	line int
	body string
}

func (e docExample) String() string { return fmt.Sprintf("%s:%d", e.file, e.line) }

// yamlBlocks returns the ```yaml blocks of a Markdown file.
func yamlBlocks(t testing.TB, file string) []docExample {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []docExample
	var cur *docExample
	for i, line := range strings.Split(string(data), "\n") {
		switch {
		case cur == nil && strings.TrimSpace(line) == "```yaml":
			cur = &docExample{file: file, line: i + 1}
		case cur != nil && strings.TrimSpace(line) == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.body += line + "\n"
		}
	}
	if cur != nil {
		t.Fatalf("%s: the block opened at line %d is never closed", file, cur.line)
	}
	return out
}

// exampleKind is what a documented YAML block is.
type exampleKind int

const (
	chartValues exampleKind = iota
	cloudConfigFile
	kubernetesObject
)

// classifyExample tells chart values (top-level keys of values.yaml), a
// --cloud-config file (a top-level backend) and Kubernetes objects apart.
// A block that is none of them fails the test: a new kind of example must
// be taught here rather than go unchecked.
func classifyExample(t testing.TB, ex docExample, valueKeys []string) exampleKind {
	t.Helper()
	var top map[string]any
	if err := sigsyaml.Unmarshal([]byte(ex.body), &top); err != nil {
		t.Fatalf("%s: not YAML: %v", ex, err)
	}
	if _, ok := top["kind"]; ok {
		if _, ok := top["apiVersion"]; ok {
			return kubernetesObject
		}
	}
	if _, ok := top["backend"]; ok {
		return cloudConfigFile
	}
	for key := range top {
		if !slices.Contains(valueKeys, key) {
			t.Fatalf("%s: a YAML block that is neither chart values (key %q is not in values.yaml), a cloud config (no backend) nor a Kubernetes object", ex, key)
		}
	}
	return chartValues
}

// chartValueKeys are the top-level keys of the chart's values.yaml.
func chartValueKeys(t testing.TB) []string {
	t.Helper()
	raw, err := os.ReadFile(chartDir + "/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := sigsyaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	keys := []string{"global"}
	for k := range values {
		keys = append(keys, k)
	}
	return keys
}

// TestChartDocExamples renders the chart with every values example of the
// README and the chart README, and every cloud config shown there as the
// chart's cloudConfig: helm template, then kubectl apply
// --dry-run=server --validate=strict on the real apiserver, then apply for
// real, each in a namespace and release of its own. Object examples (an
// L2Advertisement) are applied the same way, against the chart's CRDs.
// The cluster serves ServiceMonitors (a stand-in CRD), so an example that
// turns them on is checked too.
func TestChartDocExamples(t *testing.T) {
	cluster.BinDirForTest(t)
	keys := chartValueKeys(t)
	var examples []docExample
	var kinds []exampleKind
	for _, file := range docsWithExamples {
		for _, ex := range yamlBlocks(t, file) {
			examples = append(examples, ex)
			kinds = append(kinds, classifyExample(t, ex, keys))
		}
	}
	if n := len(examples); n < 5 {
		t.Fatalf("found only %d YAML examples in %v", n, docsWithExamples)
	}

	c := cluster.StartForTest(t, cluster.Options{})
	client := kubernetes.NewForConfigOrDie(c.Config)
	labkit.InstallCRDs(t, c, chartDir+"/crds")
	installServiceMonitorCRD(t, c)
	dir := t.TempDir()
	for i, ex := range examples {
		t.Run(strings.NewReplacer("../", "", "/", "_").Replace(ex.String()), func(t *testing.T) {
			file := filepath.Join(dir, fmt.Sprintf("example-%d.yaml", i))
			body := ex.body
			if kinds[i] == cloudConfigFile {
				body = "cloudConfig:\n" + indent(ex.body, "  ")
			}
			if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			if kinds[i] == kubernetesObject {
				kubectl(t, c, "apply", "--dry-run=server", "--validate=strict", "-f", file)
				kubectl(t, c, "apply", "-f", file)
				return
			}
			namespace, release := fmt.Sprintf("doc-%d", i), fmt.Sprintf("doc%d", i)
			createNamespace(t, client, namespace)
			manifest := helm(t, "template", release, chartDir, "--namespace", namespace,
				"--kube-version", "v1.37.2", "--api-versions", serviceMonitorAPI, "-f", file)
			rendered := filepath.Join(dir, fmt.Sprintf("rendered-%d.yaml", i))
			if err := os.WriteFile(rendered, []byte(manifest), 0o600); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s renders %d objects", ex, len(renderedObjects(t, manifest)))
			kubectl(t, c, "apply", "--dry-run=server", "--validate=strict", "-f", rendered)
			kubectl(t, c, "apply", "-f", rendered)
		})
	}
}

// serviceMonitorAPI is what the chart asks the cluster for before it
// renders ServiceMonitors.
const serviceMonitorAPI = "monitoring.coreos.com/v1/ServiceMonitor"

// installServiceMonitorCRD serves monitoring.coreos.com/v1 ServiceMonitor
// from a stand-in CRD (testdata/monitoring: the fields the chart uses).
func installServiceMonitorCRD(t testing.TB, c *cluster.Cluster) {
	t.Helper()
	kubectl(t, c, "apply", "--server-side", "-f", "testdata/monitoring")
	kubectl(t, c, "wait", "--for=condition=Established", "--timeout=60s", "crd/servicemonitors.monitoring.coreos.com")
}

func indent(s, prefix string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		if strings.TrimSpace(line) != "" {
			b.WriteString(prefix)
		}
		b.WriteString(line)
	}
	return b.String()
}
