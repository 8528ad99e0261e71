package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/heraldlb/herald/internal/testenv"
)

// imageWant is what each image must be; the Dockerfile must say the same.
type imageWant struct {
	name, user, packages string
}

var wantImages = []imageWant{
	{name: "herald-ccm", user: "65532:65532", packages: "images/herald-ccm/packages.txt"},
	{name: "herald-agent", user: "0:0", packages: "images/herald-agent/packages.txt"},
}

// imagePlatforms are the platforms every image is built for.
var imagePlatforms = []string{"linux/amd64", "linux/arm64"}

// TestImages builds herald's images as `make images` does (no Docker:
// images/build with go-containerregistry, the base layers from Debian
// packages) and reads the result with nothing but the standard library:
// the OCI layout and every blob's digest, one manifest per platform, the
// configuration (entrypoint, non-root user for herald-ccm, PATH, labels),
// the layers' files (static binaries of the right architecture with the
// stamped version; nft and every library it loads; CA certificates;
// nonroot in /etc/passwd; no shell), the docker-save tarballs, and the
// Dockerfiles agreeing with all that. The amd64 binaries then run from the
// extracted image, and as root nft and herald-agent --cleanup run chrooted
// in it, in a network namespace of their own.
func TestImages(t *testing.T) {
	testenv.RequireTools(t, "the images' base layers (Debian packages)", "apt-get", "dpkg-deb")
	out := t.TempDir()
	// Absolute: go -C runs the builder from images/build, where a relative
	// root would mean something else.
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "-C", "../images/build", "run", ".", "--root", root, "--out", out, "--tag", "0.0.0-test")
	t.Logf("%s (cross-compiles both binaries for two platforms: minutes on a cold build cache)", strings.Join(build.Args, " "))
	if log, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the images: %v\n%s", err, log)
	}
	for _, want := range wantImages {
		t.Run(want.name, func(t *testing.T) {
			layout := readOCILayout(t, filepath.Join(out, want.name))
			if got := layout.refName; got != "0.0.0-test" {
				t.Errorf("the layout's ref.name is %q, want the tag 0.0.0-test", got)
			}
			var plats []string
			for _, img := range layout.images {
				plats = append(plats, img.platform)
				checkImageConfig(t, want, img)
				checkImageFiles(t, want, img)
			}
			if slices.Sort(plats); !slices.Equal(plats, imagePlatforms) {
				t.Errorf("platforms %v, want %v", plats, imagePlatforms)
			}
			checkOCIArchive(t, filepath.Join(out, want.name+".oci.tar"), filepath.Join(out, want.name))
			for _, p := range imagePlatforms {
				arch := strings.TrimPrefix(p, "linux/")
				checkDockerTarball(t, filepath.Join(out, want.name+"-"+arch+".tar"), want.name+":0.0.0-test")
			}
			checkDockerfile(t, want)
			if img := layout.image(t, "linux/amd64"); img != nil {
				runFromImage(t, want, img)
			}
		})
	}
}

// checkDockerfile keeps the Dockerfile the same image as `make images`:
// its final stage's user, entrypoint and PATH, and the package list its
// base stage unpacks.
func checkDockerfile(t *testing.T, want imageWant) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("../images", want.name, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(raw), "\\\n", " ")
	stages := strings.Split(text, "\nFROM ")
	final := stages[len(stages)-1]
	if !strings.HasPrefix(final, "scratch") {
		t.Errorf("the Dockerfile's last stage is FROM %s, want scratch (the base layer comes from the packages)", strings.SplitN(final, "\n", 2)[0])
	}
	for _, line := range []string{
		"USER " + want.user,
		`ENTRYPOINT ["/usr/local/bin/` + want.name + `"]`,
		"ENV PATH=" + imageEnvPath,
		"COPY --from=build /out/" + want.name + " /usr/local/bin/" + want.name,
	} {
		if !slices.Contains(strings.Split(final, "\n"), line) {
			t.Errorf("the Dockerfile's final stage lacks %q, which the image built without Docker has", line)
		}
	}
	if !strings.Contains(text, "COPY images/debian-rootfs.sh "+want.packages+" /") {
		t.Errorf("the Dockerfile does not unpack %s with images/debian-rootfs.sh", want.packages)
	}
}
