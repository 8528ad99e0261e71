package cluster

import (
	"os"
	"os/exec"
	"testing"
)

// GoInstall installs a command (path@version) from the Go module proxy
// into a temporary GOBIN, which it returns: the tools tests run (kwok, the
// EC2 metadata mock) come from the same place as herald's dependencies.
func GoInstall(t testing.TB, pathAtVersion string) string {
	t.Helper()
	gobin := t.TempDir()
	install := exec.Command("go", "install", pathAtVersion)
	install.Env = append(os.Environ(), "GOBIN="+gobin)
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("go install %s: %v\n%s", pathAtVersion, err, out)
	}
	return gobin
}
