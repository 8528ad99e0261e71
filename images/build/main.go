// Command build makes herald's container images without Docker: for each
// platform it cross-compiles the binary (static, CGO_ENABLED=0), unpacks the
// image's Debian packages with ../debian-rootfs.sh, and assembles the image
// with go-containerregistry: a base layer (the packages, ../rootfs and the
// folders the image needs) and a layer with the binary. It writes an OCI
// image layout holding a multi-platform index, the same as a tar (an OCI
// archive), and a docker-save tarball per platform (docker load, kind load
// image-archive).
//
// The Dockerfiles next to it build the same content with Docker: the same
// package lists through the same script, the same files, user and
// entrypoint. e2e TestImages checks the result.
//
// It is a module of its own, so that go-containerregistry never enters
// herald's dependencies. Run it from the repository root as `make images`.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "images: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	root := fs.String("root", "../..", "The herald repository.")
	out := fs.String("out", "bin/images", "Where to write the images; a relative path is relative to --root.")
	tag := fs.String("tag", "", "The images' tag; default: the chart's appVersion, the tag its values.yaml expects.")
	version := fs.String("version", "", "The version stamped into the binaries (--version); default: v<tag>.")
	platforms := fs.String("platforms", "linux/amd64,linux/arm64", "Comma-separated OS/ARCH list.")
	names := fs.String("images", "herald-ccm,herald-agent", "Comma-separated images to build.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rootDir, err := filepath.Abs(*root)
	if err != nil {
		return err
	}
	src, err := readSource(rootDir)
	if err != nil {
		return err
	}
	if *tag == "" {
		*tag = src.appVersion
	}
	if *version == "" {
		*version = "v" + *tag
	}
	plats, err := parsePlatforms(*platforms)
	if err != nil {
		return err
	}
	outDir := *out
	if !filepath.IsAbs(outDir) {
		outDir = filepath.Join(rootDir, outDir)
	}
	var errs []error
	for _, name := range strings.Split(*names, ",") {
		spec, ok := imageSpecs()[name]
		if !ok {
			return fmt.Errorf("--images: no image %q (herald-ccm, herald-agent)", name)
		}
		b := builder{root: rootDir, out: outDir, spec: spec, tag: *tag, version: *version, src: src}
		if err := b.build(plats); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// imageSpec is what differs between herald's two images.
type imageSpec struct {
	name        string
	description string
	// pkg is the Go package of the binary, relative to the repository.
	pkg string
	// packages is the file naming the Debian packages of the base layer.
	packages string
	// user runs the entrypoint: herald-ccm as nonroot (65532, distroless's
	// convention); herald-agent as root, since capabilities reach the nft
	// it execs only for root.
	user string
}

func imageSpecs() map[string]imageSpec {
	return map[string]imageSpec{
		"herald-ccm": {name: "herald-ccm", pkg: "./cmd/herald-ccm", packages: "images/herald-ccm/packages.txt", user: "65532:65532",
			description: "herald's cloud-controller-manager: Services of type LoadBalancer on bare metal or AWS"},
		"herald-agent": {name: "herald-agent", pkg: "./cmd/herald-agent", packages: "images/herald-agent/packages.txt", user: "0:0",
			description: "herald's node agent: nftables Service forwarding and Layer 2 announcements"},
	}
}
