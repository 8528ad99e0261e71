package e2e

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/heraldlb/herald/"

// pure packages (★ in ARCHITECTURE.md) may import only the standard
// library, Kubernetes API types and other pure packages.
var pure = []string{
	"provider/service",
	"bare-metal/ipam",
	"bare-metal/election",
	"bare-metal/bgp",
	"bare-metal/api/v1alpha1",
	"aws/model",
	"aws/build",
	"internal/netipx",
}

func isPure(pkg string) bool {
	return slices.Contains(pure, pkg)
}

func pureImportAllowed(imp string) bool {
	first, _, _ := strings.Cut(imp, "/")
	switch {
	case !strings.Contains(first, "."):
		return true // standard library
	case strings.HasPrefix(imp, "k8s.io/api/"),
		strings.HasPrefix(imp, "k8s.io/apimachinery/"):
		return true
	case strings.HasPrefix(imp, module):
		return isPure(strings.TrimPrefix(imp, module))
	}
	return false
}

// packageImports lists, for every package of the module, its direct
// (non-test) imports, or with deps, everything it depends on.
func packageImports(t *testing.T, deps bool) map[string][]string {
	t.Helper()
	field := "{{join .Imports \" \"}}"
	if deps {
		field = "{{join .Deps \" \"}}"
	}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} "+field, "../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	imports := map[string][]string{}
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		imports[strings.TrimPrefix(fields[0], module)] = fields[1:]
	}
	return imports
}

// TestDependencyRule keeps the import rules of ARCHITECTURE.md.
func TestDependencyRule(t *testing.T) {
	direct := packageImports(t, false)
	all := packageImports(t, true)
	if len(direct) < 5 {
		t.Fatalf("go list found only %d packages", len(direct))
	}
	for pkg, imports := range direct {
		for _, imp := range imports {
			local, ours := strings.CutPrefix(imp, module)
			switch {
			case isPure(pkg) && !pureImportAllowed(imp):
				t.Errorf("pure package %s imports %s", pkg, imp)
			case ours && (strings.HasPrefix(local, "cmd/") || local == "cmd") && !strings.HasPrefix(pkg, "cmd/"):
				t.Errorf("%s imports %s: nothing imports cmd/", pkg, imp)
			case ours && strings.HasPrefix(local, "e2e") && !strings.HasPrefix(pkg, "e2e"):
				t.Errorf("%s imports %s: nothing outside e2e imports it", pkg, imp)
			case isAWSSDK(imp) && pkg != "aws/api":
				t.Errorf("%s imports %s: only aws/api talks to the AWS SDK", pkg, imp)
			case strings.HasPrefix(imp, "github.com/osrg/gobgp") && pkg != "bare-metal/bgp/gobgp":
				t.Errorf("%s imports %s: only bare-metal/bgp/gobgp imports GoBGP", pkg, imp)
			case pkg == "bare-metal/layer2" && (ours || strings.HasPrefix(imp, "k8s.io/api") ||
				strings.HasPrefix(imp, "k8s.io/apimachinery") || strings.HasPrefix(imp, "k8s.io/client-go")):
				t.Errorf("%s imports %s: the responder is fed plain interface names and addresses", pkg, imp)
			}
		}
	}
	for pkg, deps := range all {
		for _, dep := range deps {
			local, ours := strings.CutPrefix(dep, module)
			if !ours {
				continue
			}
			switch {
			case strings.HasPrefix(pkg, "provider") && (strings.HasPrefix(local, "bare-metal") || strings.HasPrefix(local, "aws")):
				t.Errorf("%s depends on %s: provider never depends on a backend", pkg, local)
			case strings.HasPrefix(pkg, "bare-metal") && strings.HasPrefix(local, "aws"),
				strings.HasPrefix(pkg, "aws") && strings.HasPrefix(local, "bare-metal"):
				t.Errorf("%s depends on %s: the backends are independent", pkg, local)
			}
		}
	}
	for _, p := range []string{"provider/service", "bare-metal/ipam", "bare-metal/bgp", "aws/model", "aws/build"} {
		if _, ok := direct[p]; !ok {
			t.Errorf("pure package %s not found by go list: is the list in this test stale?", p)
		}
	}
	if !slices.Contains(all["cmd/herald-ccm"], module+"provider") {
		t.Errorf("cmd/herald-ccm does not depend on provider: is go list output parsed right?")
	}
}

// isAWSSDK reports imports of the AWS SDK (its service packages, its
// configuration and credential chains, IMDS) or smithy, its runtime.
func isAWSSDK(imp string) bool {
	return strings.HasPrefix(imp, "github.com/aws/aws-sdk-go-v2") || strings.HasPrefix(imp, "github.com/aws/smithy-go")
}

// TestAWSSDKStaysInAWSAPI checks the SDK reaches the binary only through
// aws/api: every package of ours whose dependencies include an SDK service
// package depends on aws/api.
func TestAWSSDKStaysInAWSAPI(t *testing.T) {
	all := packageImports(t, true)
	if !slices.Contains(all["aws/api"], "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2") ||
		!slices.Contains(all["aws/api"], "github.com/aws/aws-sdk-go-v2/service/ec2") {
		t.Fatalf("aws/api does not depend on the ELBv2 and EC2 SDK packages: is go list output parsed right?")
	}
	for pkg, deps := range all {
		if pkg == "aws/api" || !slices.ContainsFunc(deps, func(d string) bool { return strings.HasPrefix(d, "github.com/aws/aws-sdk-go-v2/service/") }) {
			continue
		}
		if !slices.Contains(deps, module+"aws/api") {
			t.Errorf("%s depends on the AWS SDK without going through aws/api", pkg)
		}
	}
	for _, p := range []string{"aws/model", "aws/build"} {
		for _, d := range all[p] {
			if isAWSSDK(d) {
				t.Errorf("pure package %s depends on %s", p, d)
			}
		}
	}
}

// agentBanned are the client-go packages herald-agent must not link. The
// agent runs on every node, and nearly all of its binary's loadable image
// ends up resident (the kernel maps a fresh file in large folios): the
// clientset and the informer factory pull in every API group's types,
// typed clients, informers and apply configurations, with discovery and
// the OpenAPI machinery behind them, about half the binary. The agent
// talks to the apiserver through internal/kubeclient instead. (gnostic's
// OpenAPI models stay: tools/record links them through strategicpatch.)
var agentBanned = []string{
	"k8s.io/client-go/kubernetes", // also kubernetes/scheme and kubernetes/typed/...
	"k8s.io/client-go/informers",
	"k8s.io/client-go/applyconfigurations",
	"k8s.io/client-go/discovery",
	"k8s.io/client-go/gentype",
	"k8s.io/client-go/openapi",
	"k8s.io/client-go/dynamic/dynamicinformer",
	"sigs.k8s.io/structured-merge-diff/v6/typed",
}

// TestAgentLinksNoClientset keeps herald-agent's binary small.
func TestAgentLinksNoClientset(t *testing.T) {
	deps := packageImports(t, true)["cmd/herald-agent"]
	if !slices.Contains(deps, "k8s.io/client-go/rest") {
		t.Fatalf("cmd/herald-agent does not depend on k8s.io/client-go/rest: is go list output parsed right?")
	}
	for _, dep := range deps {
		for _, banned := range agentBanned {
			if dep == banned || strings.HasPrefix(dep, banned+"/") {
				t.Errorf("herald-agent links %s: use internal/kubeclient, not client-go's clientset, informers or apply configurations", dep)
			}
		}
	}
}
