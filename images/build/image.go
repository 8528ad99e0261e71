package main

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// nonrootUID owns /home/nonroot, herald-ccm's home.
const nonrootUID = 65532

// imagePath is where the binary lives in the image, and PATH finds nft.
const imagePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

type builder struct {
	root, out    string
	spec         imageSpec
	tag, version string
	src          source
}

// build makes the image for every platform and writes the outputs.
func (b builder) build(plats []platform) error {
	work, err := os.MkdirTemp("", "herald-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	images := map[string]v1.Image{}
	for _, p := range plats {
		img, err := b.image(filepath.Join(work, p.arch), p)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		images[p.arch] = img
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: p.os, Architecture: p.arch}}})
	}
	if err := os.MkdirAll(b.out, 0o755); err != nil {
		return err
	}
	dir := filepath.Join(b.out, b.spec.name)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	ref := b.spec.name + ":" + b.tag
	// ref.name is the tag, as skopeo and buildx write it; containerd's
	// import reads its own annotation for the full name.
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": b.tag,
		"io.containerd.image.name":          "docker.io/library/" + ref,
	})); err != nil {
		return err
	}
	if err := tarFolder(dir, dir+".oci.tar", b.src.time); err != nil {
		return err
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	for arch, img := range images {
		file := filepath.Join(b.out, fmt.Sprintf("%s-%s.tar", b.spec.name, arch))
		if err := tarball.WriteToFile(file, tag, img); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
	}
	fmt.Fprintf(os.Stderr, "images: %s (%d platforms) in %s/%s{,.oci.tar,-<arch>.tar}\n", ref, len(plats), b.out, b.spec.name)
	return nil
}

// image builds one platform's image in work.
func (b builder) image(work string, p platform) (v1.Image, error) {
	bin := filepath.Join(work, b.spec.name)
	if err := b.goBuild(bin, p); err != nil {
		return nil, err
	}
	rootfs := filepath.Join(work, "rootfs")
	script := exec.Command(filepath.Join(b.root, "images/debian-rootfs.sh"), p.arch, filepath.Join(b.root, b.spec.packages), rootfs)
	script.Stdout, script.Stderr = os.Stderr, os.Stderr
	if err := script.Run(); err != nil {
		return nil, fmt.Errorf("images/debian-rootfs.sh: %w", err)
	}
	base, err := dirLayer(filepath.Join(work, "base.tar"), b.src.time, []string{rootfs, filepath.Join(b.root, "images/rootfs")},
		[]extraDir{{path: "tmp", mode: fs.ModeSticky | 0o777}, {path: "home/nonroot", mode: 0o700, uid: nonrootUID}})
	if err != nil {
		return nil, err
	}
	binLayer, err := fileLayer(filepath.Join(work, "bin.tar"), b.src.time, bin, "usr/local/bin/"+b.spec.name)
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: b.src.time}
	cfg := &v1.ConfigFile{
		Architecture: p.arch, OS: p.os, Created: created,
		RootFS: v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Entrypoint: []string{"/usr/local/bin/" + b.spec.name},
			User:       b.spec.user,
			WorkingDir: "/",
			Env:        []string{"PATH=" + imagePath},
			Labels: map[string]string{
				"org.opencontainers.image.title":       b.spec.name,
				"org.opencontainers.image.description": b.spec.description,
				"org.opencontainers.image.source":      "https://github.com/heraldlb/herald",
				"org.opencontainers.image.version":     b.tag,
				"org.opencontainers.image.revision":    b.src.commit,
				"org.opencontainers.image.created":     b.src.time.Format(time.RFC3339),
			},
		},
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, err
	}
	return mutate.Append(img,
		mutate.Addendum{Layer: base, History: v1.History{Created: created,
			CreatedBy: "images/debian-rootfs.sh " + p.arch + " " + b.spec.packages + " + images/rootfs", Comment: "base"}},
		mutate.Addendum{Layer: binLayer, History: v1.History{Created: created,
			CreatedBy: "go build " + b.spec.pkg, Comment: b.spec.name}})
}

// goBuild cross-compiles the binary: static, trimmed, version stamped as
// Kubernetes components are.
func (b builder) goBuild(out string, p platform) error {
	state := "clean"
	if b.src.dirty {
		state = "dirty"
	}
	pkg := "k8s.io/component-base/version"
	ldflags := strings.Join([]string{"-s", "-w",
		"-X", pkg + ".gitVersion=" + b.version, "-X", pkg + ".gitCommit=" + b.src.commit,
		"-X", pkg + ".gitTreeState=" + state, "-X", pkg + ".buildDate=" + b.src.time.Format(time.RFC3339)}, " ")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, b.spec.pkg)
	cmd.Dir = b.root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.os, "GOARCH="+p.arch)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	fmt.Fprintf(os.Stderr, "images: go build %s for %s\n", b.spec.pkg, p)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", b.spec.pkg, err)
	}
	return nil
}
