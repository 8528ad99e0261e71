package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	awsbackend "github.com/heraldlb/herald/aws"
	baremetal "github.com/heraldlb/herald/bare-metal"
)

// schemaNode is the part of a JSON schema this test reads.
type schemaNode struct {
	Ref                  string                 `json:"$ref"`
	Type                 any                    `json:"type"`
	Properties           map[string]*schemaNode `json:"properties"`
	Items                *schemaNode            `json:"items"`
	AdditionalProperties any                    `json:"additionalProperties"`
	Definitions          map[string]*schemaNode `json:"definitions"`
}

func loadSchema(t testing.TB) *schemaNode {
	t.Helper()
	raw, err := os.ReadFile(chartDir + "/values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var s schemaNode
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

func (s *schemaNode) resolve(root *schemaNode) *schemaNode {
	if name, ok := strings.CutPrefix(s.Ref, "#/definitions/"); ok {
		return root.Definitions[name]
	}
	return s
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// compareSchema checks that the schema at path describes exactly the JSON
// fields of typ, recursively, and refuses unknown ones as herald-ccm's
// strict decoder does: a field added to the Go config without the schema
// (or the other way round) fails here.
func compareSchema(t *testing.T, root, node *schemaNode, typ reflect.Type, path string) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if node == nil {
		t.Errorf("%s: the schema does not describe it", path)
		return
	}
	node = node.resolve(root)
	if reflect.PointerTo(typ).Implements(jsonUnmarshaler) {
		return // a leaf with its own syntax (a duration): a pattern, not properties
	}
	switch typ.Kind() {
	case reflect.Struct:
		if node.AdditionalProperties != false {
			t.Errorf("%s: the schema allows unknown keys; herald-ccm refuses them", path)
		}
		fields := map[string]reflect.Type{}
		for f := range typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" || !f.IsExported() {
				continue
			}
			fields[name] = f.Type
		}
		for name, ft := range fields {
			compareSchema(t, root, node.Properties[name], ft, path+"."+name)
		}
		for name := range node.Properties {
			if _, ok := fields[name]; !ok {
				t.Errorf("%s.%s: in the schema, but herald-ccm has no such field", path, name)
			}
		}
	case reflect.Slice:
		compareSchema(t, root, node.Items, typ.Elem(), path+"[]")
	case reflect.Map:
		if _, ok := node.AdditionalProperties.(map[string]any); !ok {
			t.Errorf("%s: a map, but the schema says nothing of its values", path)
		}
	}
}

// TestChartSchemaMatchesCloudConfig keeps values.schema.json's cloudConfig
// equal to the Go types herald-ccm decodes strictly: every field of the
// aws and bareMetal sections, recursively, and nothing else.
func TestChartSchemaMatchesCloudConfig(t *testing.T) {
	root := loadSchema(t)
	cc := root.Properties["cloudConfig"]
	if cc == nil {
		t.Fatal("the schema has no cloudConfig")
	}
	compareSchema(t, root, cc.Properties["aws"], reflect.TypeFor[awsbackend.Config](), "cloudConfig.aws")
	compareSchema(t, root, cc.Properties["bareMetal"], reflect.TypeFor[baremetal.Config](), "cloudConfig.bareMetal")
}

// badValues are values files the schema (or a template's check) must
// refuse, each with what the message must name.
var badValues = []struct {
	name, values string
	want         []string
}{
	{"typo under agent", "agent: {enabeld: true}", []string{"enabeld"}},
	{"aws backend without its section", "cloudConfig: {backend: aws}", []string{"/cloudConfig", "aws"}},
	{"aws region", "cloudConfig: {backend: aws, aws: {clusterName: c, region: Paris}}", []string{"/cloudConfig/aws/region", "Paris"}},
	{"aws VPC", "cloudConfig: {backend: aws, aws: {clusterName: c, vpcID: '0123'}}", []string{"/cloudConfig/aws/vpcID"}},
	{"aws security group", "cloudConfig: {backend: aws, aws: {clusterName: c, nodeSecurityGroups: [sg-1, nodes]}}", []string{"/cloudConfig/aws/nodeSecurityGroups/1", "nodes"}},
	{"aws unknown key", "cloudConfig: {backend: aws, aws: {clusterName: c, regoin: eu-west-1}}", []string{"regoin"}},
	{"aws duration", "cloudConfig: {backend: aws, aws: {clusterName: c, cacheTTL: 10 minutes}}", []string{"/cloudConfig/aws/cacheTTL"}},
	{"aws rate", "cloudConfig: {backend: aws, aws: {clusterName: c, rateLimits: {ec2: {qps: 0, burst: 1}}}}", []string{"/cloudConfig/aws/rateLimits/ec2/qps"}},
	{"aws tag prefix", "cloudConfig: {backend: aws, aws: {clusterName: c, tags: {'aws:x': y}}}", []string{"/cloudConfig/aws/tags"}},
	{"aws section with bare-metal", "cloudConfig: {backend: bare-metal, aws: {clusterName: c}}", []string{"/cloudConfig"}},
	{"unknown backend", "cloudConfig: {backend: gcp}", []string{"/cloudConfig/backend", "bare-metal", "aws"}},
	{"bad pool address", "cloudConfig: {bareMetal: {pools: [{name: a, addresses: [192.0.2.0/28, lots]}]}}", []string{"/cloudConfig/bareMetal/pools/0/addresses/1", "lots"}},
	{"unknown controller", "ccm: {controllers: [service-lb-controller, route]}", []string{"/ccm/controllers/1", "must be one of", "cloud-node"}},
	{"node controllers on bare metal", "ccm: {controllers: [service-lb-controller, cloud-node]}", []string{"/ccm/controllers/1", "must be one of 'service-lb-controller', 'herald-class-controller'"}},
	{"no controllers", "ccm: {controllers: []}", []string{"/ccm/controllers"}},
	{"PDB blocking every drain", "ccm: {podDisruptionBudget: {enabled: true, maxUnavailable: 0}}", []string{"/ccm/podDisruptionBudget/maxUnavailable"}},
	{"ServiceMonitor without the CRD", "metrics: {serviceMonitor: {enabled: true}}", []string{"monitoring.coreos.com/v1", "--api-versions"}},
	{"agent with nothing to do", "agent: {enabled: true, forwarding: false}", []string{"nothing to do"}},
	{"unknown detect-local mode", "agent: {detectLocalMode: nodecidr}", []string{"/agent/detectLocalMode", "ClusterCIDR", "NodeCIDR"}},
	{"bridge mode without bridge", "agent: {enabled: true, detectLocalMode: BridgeInterface}",
		[]string{"agent.detectLocalMode=BridgeInterface needs agent.podBridgeInterface"}},
	{"prefix mode without prefix", "agent: {enabled: true, detectLocalMode: InterfaceNamePrefix}",
		[]string{"agent.detectLocalMode=InterfaceNamePrefix needs agent.podInterfaceNamePrefix"}},
	{"bridge in another mode", "agent: {enabled: true, podBridgeInterface: cbr0}",
		[]string{"agent.podBridgeInterface is read only with agent.detectLocalMode=BridgeInterface, not ClusterCIDR"}},
	{"interface name with a space", "agent: {detectLocalMode: BridgeInterface, podBridgeInterface: 'br 0'}",
		[]string{"/agent/podBridgeInterface", "br 0"}},
	{"interface name too long", "agent: {detectLocalMode: InterfaceNamePrefix, podInterfaceNamePrefix: a-very-long-prefix}",
		[]string{"/agent/podInterfaceNamePrefix", "a-very-long-prefix"}},
}

// TestChartRefusesBadValues renders the chart with each bad values file:
// helm must refuse it and the message must name what is wrong.
func TestChartRefusesBadValues(t *testing.T) {
	dir := t.TempDir()
	for i, bad := range badValues {
		t.Run(strings.ReplaceAll(bad.name, " ", "_"), func(t *testing.T) {
			file := filepath.Join(dir, "bad.yaml")
			if err := os.WriteFile(file, []byte(bad.values+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			out := helmFails(t, "template", "herald", chartDir, "--kube-version", "v1.37.2", "-f", file)
			for _, want := range bad.want {
				if !strings.Contains(out, want) {
					t.Errorf("values %d (%s) refused without naming %q:\n%s", i, bad.values, want, out)
				}
			}
			if !slices.ContainsFunc(strings.Split(out, "\n"), func(l string) bool { return strings.Contains(l, "Error") }) {
				t.Errorf("helm's output has no error line:\n%s", out)
			}
		})
	}
}
