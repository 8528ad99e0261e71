package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// generatedFrom lists what bare-metal/api/generate.sh reads and writes: the
// module files (controller-gen loads the API packages with them), the API
// packages and the script, and the CRDs it writes into the chart.
var generatedFrom = []string{"go.mod", "go.sum", "bare-metal/api", "charts/herald/crds"}

// TestGeneratedFilesAreUpToDate runs `bare-metal/api/generate.sh --check`,
// so a change to the API types without regenerating the deepcopy code and
// the CRD YAML fails `make test`. The script regenerates in place before it
// compares, and other tests compile and read those files meanwhile, so it
// runs on a copy of them (tracked and untracked, as they are in the working
// tree) in a scratch git repository where they are the last commit.
func TestGeneratedFilesAreUpToDate(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	list := run(t, root, "git", append([]string{"ls-files", "-z", "--cached", "--others", "--exclude-standard", "--"}, generatedFrom...)...)
	files := strings.Split(strings.TrimSuffix(list, "\x00"), "\x00")
	copyDir := t.TempDir()
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(root, f))
		if os.IsNotExist(err) {
			continue // deleted in the working tree, not yet in git
		}
		if err != nil {
			t.Fatal(err)
		}
		info, err := os.Stat(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(copyDir, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	run(t, copyDir, "git", "init", "--quiet")
	run(t, copyDir, "git", "add", "--all")
	run(t, copyDir, "git", "-c", "user.name=herald-e2e", "-c", "user.email=e2e@herald.invalid", "-c", "commit.gpgSign=false",
		"commit", "--quiet", "--message=working tree")

	t.Log("bare-metal/api/generate.sh --check (go run compiles controller-gen on a cold build cache)")
	cmd := exec.Command("bash", "bare-metal/api/generate.sh", "--check")
	cmd.Dir = copyDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s\n%s", err, out, run(t, copyDir, "git", "diff"))
	}
}

// run runs a command in dir and returns its standard output.
func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}
