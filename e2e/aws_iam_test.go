package e2e

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// impliedActions are permissions AWS checks for a call herald makes
// without naming them: tags given at creation need the tagging action.
var impliedActions = map[string]string{
	"ec2:CreateTags": "ec2:CreateSecurityGroup", // TagSpecifications on the new group
}

// sdkActions derives, from aws/api's source, every AWS action herald can
// call: each method call on the SDK clients (e.c.<Operation>) and each
// paginator (New<Operation>Paginator), by the API the method's receiver
// wraps.
func sdkActions(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../aws/api/*.go")
	if err != nil {
		t.Fatal(err)
	}
	prefix := map[string]string{"elbAPI": "elasticloadbalancing:", "ec2API": "ec2:"}
	paginator := regexp.MustCompile(`^New(\w+)Paginator$`)
	actions := map[string]bool{}
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Recv == nil {
				continue
			}
			recv := fn.Recv.List[0].Type
			if star, ok := recv.(*ast.StarExpr); ok {
				recv = star.X
			}
			ident, ok := recv.(*ast.Ident)
			if !ok || prefix[ident.Name] == "" {
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if inner, ok := sel.X.(*ast.SelectorExpr); ok && inner.Sel.Name == "c" {
					actions[prefix[ident.Name]+sel.Sel.Name] = true
				}
				if m := paginator.FindStringSubmatch(sel.Sel.Name); m != nil {
					actions[prefix[ident.Name]+m[1]] = true
				}
				return true
			})
		}
	}
	return slices.Sorted(maps.Keys(actions))
}

// readmePolicy returns the IAM policy in the README's EKS section.
func readmePolicy(t *testing.T) map[string]any {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "<!-- iam-policy -->")
	if !ok {
		t.Fatal("README has no <!-- iam-policy --> marker before the policy")
	}
	_, rest, _ = strings.Cut(rest, "```json\n")
	body, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("README's IAM policy is not in a ```json block")
	}
	var policy map[string]any
	if err := json.Unmarshal([]byte(body), &policy); err != nil {
		t.Fatalf("README's IAM policy is not JSON: %v", err)
	}
	return policy
}

// TestIAMPolicyCoversExactlyTheCallsMade keeps the README's least-privilege
// policy equal to what the code calls: a new call without a permission
// fails here, and so does a permission no call needs.
func TestIAMPolicyCoversExactlyTheCallsMade(t *testing.T) {
	calls := sdkActions(t)
	if len(calls) < 20 {
		t.Fatalf("found only %d calls in aws/api: %v", len(calls), calls)
	}
	// onCreate: actions granted only inside a creating call (a condition
	// on <service>:CreateAction): they cannot serve a call of their own.
	granted, onCreate := map[string]bool{}, map[string]bool{}
	statements, _ := readmePolicy(t)["Statement"].([]any)
	for _, s := range statements {
		statement, _ := s.(map[string]any)
		if statement["Effect"] != "Allow" {
			t.Errorf("statement %v is not an Allow", statement["Sid"])
		}
		into := granted
		if condition, _ := json.Marshal(statement["Condition"]); strings.Contains(string(condition), ":CreateAction") {
			into = onCreate
		}
		switch a := statement["Action"].(type) {
		case string:
			into[a] = true
		case []any:
			for _, x := range a {
				into[x.(string)] = true
			}
		}
	}
	for _, call := range calls {
		if !granted[call] {
			t.Errorf("herald calls %s, which the README's policy does not grant (outside a create)", call)
		}
	}
	for action := range onCreate {
		if !slices.Contains(calls, action) && !slices.Contains(calls, impliedActions[action]) {
			t.Errorf("the policy grants %s on create, which no call of herald needs", action)
		}
	}
	for action := range granted {
		if strings.Contains(action, "*") {
			t.Errorf("the policy grants %s: wildcards are not least privilege", action)
		}
		if !slices.Contains(calls, action) && !slices.Contains(calls, impliedActions[action]) {
			t.Errorf("the policy grants %s, which no call of herald needs", action)
		}
	}
}
