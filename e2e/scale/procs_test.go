package scale

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/heraldlb/herald/e2e/cluster"
)

const (
	kwokModule  = "sigs.k8s.io/kwok"
	kwokVersion = "v0.8.0"
)

// buildCommand builds one of herald's commands (herald-ccm, herald-agent)
// from this checkout into a temporary folder.
func buildCommand(t testing.TB, name string) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", dir, "../../cmd/"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	return filepath.Join(dir, name)
}

// installKWOK installs kwok from the Go module proxy into a temporary GOBIN
// and returns the binary and the module's folder in the module cache, where
// the stage configs ship (kustomize/stage/).
func installKWOK(t *testing.T) (binary, moduleDir string) {
	t.Helper()
	gobin := cluster.GoInstall(t, kwokModule+"/cmd/kwok@"+kwokVersion)
	download := exec.Command("go", "mod", "download", "-json", kwokModule+"@"+kwokVersion)
	download.Dir = gobin // outside herald's module: nothing there changes
	out, err := download.Output()
	if err != nil {
		t.Fatalf("go mod download %s@%s: %v", kwokModule, kwokVersion, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download -json: no Dir in %s (%v)", out, err)
	}
	return filepath.Join(gobin, "kwok"), mod.Dir
}

// kwokStages are the stage configs that make kwok's Nodes Ready and keep
// them so with heartbeats.
func kwokStages(moduleDir string) []string {
	return []string{
		filepath.Join(moduleDir, "kustomize/stage/node/fast/node-initialize.yaml"),
		filepath.Join(moduleDir, "kustomize/stage/node/heartbeat/node-heartbeat.yaml"),
	}
}

// memory is a process's resident set from /proc/<pid>/status, in MiB.
//
// FileMiB is what RSS counts of mapped files, mostly the binary's own text
// and read-only data. Kernels that cache files in large folios (ext4 on
// 6.x) map them whole, so a 100 MB Go binary is ~70 MiB of RSS from its
// first second, whatever it does. It is shared, clean and reclaimable page
// cache, but VmHWM includes it; PeakMiB-FileMiB is the process's own peak
// (anonymous memory: heap, stacks), as FileMiB hardly moves after start.
type memory struct {
	PeakMiB    float64 `json:"peak_rss_mib"` // VmHWM
	CurrentMiB float64 `json:"rss_mib"`      // VmRSS
	FileMiB    float64 `json:"rss_file_mib"` // RssFile
	AnonMiB    float64 `json:"rss_anon_mib"` // RssAnon
}

// PeakAnonMiB is the peak less the file-backed pages (see memory).
func (m memory) PeakAnonMiB() float64 { return m.PeakMiB - m.FileMiB }

func readMemory(pid int) (memory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	var m memory
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(value)
		if len(fields) != 2 || fields[1] != "kB" {
			continue
		}
		kb, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return memory{}, fmt.Errorf("/proc/%d/status %s: %w", pid, key, err)
		}
		switch key {
		case "VmHWM":
			m.PeakMiB = kb / 1024
		case "VmRSS":
			m.CurrentMiB = kb / 1024
		case "RssFile":
			m.FileMiB = kb / 1024
		case "RssAnon":
			m.AnonMiB = kb / 1024
		}
	}
	if m.PeakMiB == 0 {
		return memory{}, fmt.Errorf("/proc/%d/status has no VmHWM", pid)
	}
	return m, nil
}

// loadAverage is /proc/loadavg's 1-minute figure.
func loadAverage() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return -1
	}
	return v
}
