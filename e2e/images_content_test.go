package e2e

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/heraldlb/herald/internal/testenv"
)

// archOf maps an image platform to what its ELF files must say.
var archOf = map[string]struct {
	machine elf.Machine
	triplet string
}{
	"linux/amd64": {elf.EM_X86_64, "x86_64-linux-gnu"},
	"linux/arm64": {elf.EM_AARCH64, "aarch64-linux-gnu"},
}

var commitPattern = regexp.MustCompile(`^[0-9a-f]{40}$`)

func checkImageConfig(t *testing.T, want imageWant, img ociImage) {
	t.Helper()
	c := img.config
	if c.OS+"/"+c.Architecture != img.platform {
		t.Errorf("%s: config says %s/%s", img.platform, c.OS, c.Architecture)
	}
	if entry := []string{"/usr/local/bin/" + want.name}; !slices.Equal(c.Config.Entrypoint, entry) || len(c.Config.Cmd) != 0 {
		t.Errorf("%s: entrypoint %q, cmd %q; want %q and no cmd (the chart passes args)", img.platform, c.Config.Entrypoint, c.Config.Cmd, entry)
	}
	if c.Config.User != want.user {
		t.Errorf("%s: user %q, want %q", img.platform, c.Config.User, want.user)
	}
	if !slices.Contains(c.Config.Env, "PATH="+imageEnvPath) {
		t.Errorf("%s: env %q lacks PATH=%s", img.platform, c.Config.Env, imageEnvPath)
	}
	labels := c.Config.Labels
	if labels["org.opencontainers.image.title"] != want.name || labels["org.opencontainers.image.version"] != "0.0.0-test" ||
		labels["org.opencontainers.image.source"] == "" || !commitPattern.MatchString(labels["org.opencontainers.image.revision"]) {
		t.Errorf("%s: labels %v lack the title, version 0.0.0-test, source or revision", img.platform, labels)
	}
}

// checkImageFiles extracts the image and checks its files.
func checkImageFiles(t *testing.T, want imageWant, img ociImage) {
	t.Helper()
	root := t.TempDir()
	files := img.extract(t, root)
	arch := archOf[img.platform]
	bin := filepath.Join(root, "usr/local/bin", want.name)
	checkStaticBinary(t, img.platform, bin, arch.machine)
	for _, shell := range []string{"bin/sh", "usr/bin/sh", "bin/bash"} {
		if _, ok := files[shell]; ok {
			t.Errorf("%s: the image has a shell, %s", img.platform, shell)
		}
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil || !strings.Contains(string(passwd), "\nnonroot:x:65532:65532:") {
		t.Errorf("%s: /etc/passwd has no nonroot 65532 (%v):\n%s", img.platform, err, passwd)
	}
	if f, ok := files["tmp"]; !ok || f.hdr.Mode&0o1777 != 0o1777 {
		t.Errorf("%s: /tmp missing or not mode 1777", img.platform)
	}
	if f, ok := files["home/nonroot"]; !ok || f.hdr.Uid != 65532 {
		t.Errorf("%s: /home/nonroot missing or not nonroot's", img.platform)
	}
	for _, pkg := range packageList(t, want.packages) {
		if _, ok := files["var/lib/dpkg/status.d/"+pkg]; !ok {
			t.Errorf("%s: no var/lib/dpkg/status.d/%s: scanners would not see the package", img.platform, pkg)
		}
	}
	switch want.name {
	case "herald-ccm":
		bundle, err := os.ReadFile(filepath.Join(root, "etc/ssl/certs/ca-certificates.crt"))
		if n := strings.Count(string(bundle), "-----BEGIN CERTIFICATE-----"); err != nil || n < 100 {
			t.Errorf("%s: the CA bundle holds %d certificates (%v); the AWS APIs need them", img.platform, n, err)
		}
	case "herald-agent":
		for _, tool := range []string{"usr/sbin/nft", "usr/sbin/conntrack"} {
			checkDynamicClosure(t, img.platform, root, filepath.Join(root, tool), arch.machine, arch.triplet)
		}
	}
}

// packageList reads a packages.txt.
func packageList(t *testing.T, file string) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", file))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for line := range strings.Lines(string(raw)) {
		line, _, _ = strings.Cut(line, "#")
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// checkStaticBinary: an executable for machine, statically linked (no
// interpreter, no shared library), built for the platform without cgo and
// stamped with the image's version.
func checkStaticBinary(t *testing.T, platform, file string, machine elf.Machine) {
	t.Helper()
	f, err := elf.Open(file)
	if err != nil {
		t.Fatalf("%s: %v", platform, err)
	}
	defer f.Close()
	if f.Machine != machine {
		t.Errorf("%s: %s is for %v, want %v", platform, file, f.Machine, machine)
	}
	libs, _ := f.ImportedLibraries()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || len(libs) > 0 {
			t.Errorf("%s: %s is dynamically linked (%v); the image has no libc for it", platform, file, libs)
			break
		}
	}
	info, err := buildinfo.ReadFile(file)
	if err != nil {
		t.Fatalf("%s: %v", platform, err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if settings["GOARCH"] != strings.TrimPrefix(platform, "linux/") || settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
		t.Errorf("%s: build settings %v: want GOARCH of the platform, CGO_ENABLED=0, -trimpath", platform, settings)
	}
	// With -trimpath, go build records no -ldflags; the stamped version is
	// in the binary's data (the amd64 one also prints it, runFromImage).
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte("v0.0.0-test")) {
		t.Errorf("%s: %s does not hold the stamped version v0.0.0-test", platform, file)
	}
}

// checkDynamicClosure: file, its interpreter and every library it loads,
// transitively, are in the image, for machine: nothing is looked up on the
// host.
func checkDynamicClosure(t *testing.T, platform, root, file string, machine elf.Machine, triplet string) {
	t.Helper()
	dirs := []string{"lib/" + triplet, "usr/lib/" + triplet, "lib", "usr/lib"}
	seen := map[string]bool{}
	queue := []string{file}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		f, err := elf.Open(cur)
		if err != nil {
			t.Errorf("%s: %s: %v", platform, cur, err)
			continue
		}
		if f.Machine != machine {
			t.Errorf("%s: %s is for %v", platform, cur, f.Machine)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				interp := make([]byte, p.Filesz)
				if _, err := p.ReadAt(interp, 0); err == nil {
					name := strings.TrimRight(string(interp), "\x00")
					if _, err := resolveInRoot(root, name); err != nil {
						t.Errorf("%s: %s's interpreter %s is not in the image: %v", platform, cur, name, err)
					}
				}
			}
		}
		libs, _ := f.ImportedLibraries()
		f.Close()
		for _, lib := range libs {
			if seen[lib] {
				continue
			}
			seen[lib] = true
			found := ""
			for _, dir := range dirs {
				if p, err := resolveInRoot(root, path.Join("/", dir, lib)); err == nil {
					found = p
					break
				}
			}
			if found == "" {
				t.Errorf("%s: %s needs %s, which is not in the image", platform, cur, lib)
				continue
			}
			queue = append(queue, found)
		}
	}
	// nft loads libnftables and more, conntrack libnetfilter_conntrack and
	// more: fewer means the libraries were not read at all.
	if len(seen) < 3 {
		t.Errorf("%s: %s loads only %v", platform, file, seen)
	}
}

// resolveInRoot follows symbolic links as the image's own root would.
func resolveInRoot(root, name string) (string, error) {
	for range 40 {
		p := filepath.Join(root, name)
		info, err := os.Lstat(p)
		if err != nil {
			return "", err
		}
		if info.Mode()&os.ModeSymlink == 0 {
			return p, nil
		}
		target, err := os.Readlink(p)
		if err != nil {
			return "", err
		}
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(name), target)
		}
		name = target
	}
	return "", os.ErrInvalid
}

// runFromImage runs the amd64 image's binary as extracted, and as root
// runs herald-agent chrooted into its image in a network namespace of its
// own: it must find and run the image's nft through the image's PATH; and
// the operator's conntrack must run there too.
func runFromImage(t *testing.T, want imageWant, img *ociImage) {
	t.Helper()
	root := t.TempDir()
	img.extract(t, root)
	bin := filepath.Join(root, "usr/local/bin", want.name)
	out, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--kubeconfig") {
		t.Errorf("%s --help from the image: %v\n%s", want.name, err, out)
	}
	if want.name != "herald-agent" {
		return
	}
	out, err = exec.Command(bin, "--version").Output() // on stdout, for $(herald-agent --version)
	if err != nil || strings.TrimSpace(string(out)) != "herald-agent v0.0.0-test" {
		t.Errorf("herald-agent --version from the image: %v: %q, want %q", err, out, "herald-agent v0.0.0-test")
	}
	t.Run("chroot", func(t *testing.T) {
		testenv.RequireRoot(t, "running herald-agent and nft chrooted into the image")
		testenv.RequireTools(t, "running herald-agent chrooted into the image", "unshare", "chroot", "mknod")
		// A container runtime gives the pod /dev; nft is run with its
		// standard input on /dev/null.
		if err := os.MkdirAll(filepath.Join(root, "dev"), 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mknod", "-m", "666", filepath.Join(root, "dev/null"), "c", "1", "3").CombinedOutput(); err != nil {
			t.Fatalf("mknod dev/null in the image's root: %v\n%s", err, out)
		}
		in := "env -i PATH=" + imageEnvPath + " chroot " + root + " "
		// conntrack -L lists the namespace's (empty) flow table over
		// netlink: it loads all its libraries and talks to the kernel.
		script := in + "/usr/sbin/nft --version\n" +
			in + "/usr/sbin/nft add table inet herald\n" +
			in + "/usr/local/bin/herald-agent --cleanup\n" +
			"if " + in + "/usr/sbin/nft list table inet herald; then echo 'the table survived --cleanup'; exit 3; fi\n" +
			in + "/usr/sbin/conntrack --version\n" +
			in + "/usr/sbin/conntrack -L\n"
		out, err := exec.Command("unshare", "--net", "--", "/bin/sh", "-ec", script).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "nftables v") || !strings.Contains(string(out), "conntrack v") {
			t.Errorf("nft, herald-agent --cleanup and conntrack chrooted into the image: %v\n%s", err, out)
		}
		t.Logf("%s", out)
	})
}
