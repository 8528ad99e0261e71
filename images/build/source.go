package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// source is what the images say about the tree they were built from.
type source struct {
	appVersion string
	commit     string
	// dirty: uncommitted changes went into the build.
	dirty bool
	// time is the commit's: every timestamp in the images, so that the same
	// commit builds the same layers.
	time time.Time
}

func readSource(root string) (source, error) {
	var s source
	chart, err := os.ReadFile(filepath.Join(root, "charts/herald/Chart.yaml"))
	if err != nil {
		return s, err
	}
	sc := bufio.NewScanner(bytes.NewReader(chart))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "appVersion:"); ok {
			s.appVersion = strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	if s.appVersion == "" {
		return s, fmt.Errorf("charts/herald/Chart.yaml has no appVersion")
	}
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Dir = root
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	if s.commit, err = git("rev-parse", "HEAD"); err != nil {
		return s, fmt.Errorf("git rev-parse HEAD: %w", err)
	}
	ct, err := git("log", "-1", "--format=%ct")
	if err != nil {
		return s, fmt.Errorf("git log: %w", err)
	}
	secs, err := strconv.ParseInt(ct, 10, 64)
	if err != nil {
		return s, fmt.Errorf("commit time %q: %w", ct, err)
	}
	s.time = time.Unix(secs, 0).UTC()
	_, err = git("diff", "--quiet", "HEAD")
	s.dirty = err != nil
	return s, nil
}

// platform is one OS/architecture an image is built for.
type platform struct{ os, arch string }

func (p platform) String() string { return p.os + "/" + p.arch }

func parsePlatforms(s string) ([]platform, error) {
	var out []platform
	for _, item := range strings.Split(s, ",") {
		osName, arch, ok := strings.Cut(strings.TrimSpace(item), "/")
		if !ok || osName != "linux" || (arch != "amd64" && arch != "arm64") {
			return nil, fmt.Errorf("--platforms: %q is not linux/amd64 or linux/arm64", item)
		}
		out = append(out, platform{os: osName, arch: arch})
	}
	return out, nil
}
