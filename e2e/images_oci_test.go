package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// The OCI image layout as the image-spec defines it, read with the
// standard library only: an independent check of what go-containerregistry
// wrote.
const (
	ociIndexType    = "application/vnd.oci.image.index.v1+json"
	ociManifestType = "application/vnd.oci.image.manifest.v1+json"
	ociConfigType   = "application/vnd.oci.image.config.v1+json"
	ociLayerGzip    = "application/vnd.oci.image.layer.v1.tar+gzip"
	// imageEnvPath is the images' PATH (herald-agent finds nft in it).
	imageEnvPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

type ociDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
	Platform    *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform"`
}

type ociIndex struct {
	SchemaVersion int             `json:"schemaVersion"`
	MediaType     string          `json:"mediaType"`
	Manifests     []ociDescriptor `json:"manifests"`
}

type ociManifest struct {
	MediaType string          `json:"mediaType"`
	Config    ociDescriptor   `json:"config"`
	Layers    []ociDescriptor `json:"layers"`
}

type ociConfig struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Config       struct {
		Entrypoint []string          `json:"Entrypoint"`
		Cmd        []string          `json:"Cmd"`
		User       string            `json:"User"`
		Env        []string          `json:"Env"`
		Labels     map[string]string `json:"Labels"`
	} `json:"config"`
	RootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// ociImage is one platform's image: its configuration and its layers,
// uncompressed.
type ociImage struct {
	platform string
	config   ociConfig
	layers   [][]byte
}

type ociLayout struct {
	refName string
	images  []ociImage
}

func (l ociLayout) image(t *testing.T, platform string) *ociImage {
	t.Helper()
	for i := range l.images {
		if l.images[i].platform == platform {
			return &l.images[i]
		}
	}
	t.Errorf("no %s image", platform)
	return nil
}

func sha256Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// blob reads a blob of the layout and checks its digest and size.
func blob(t *testing.T, dir string, d ociDescriptor) []byte {
	t.Helper()
	hexDigest, ok := strings.CutPrefix(d.Digest, "sha256:")
	if !ok {
		t.Fatalf("digest %q is not sha256", d.Digest)
	}
	data, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", hexDigest))
	if err != nil {
		t.Fatal(err)
	}
	if got := sha256Digest(data); got != d.Digest || int64(len(data)) != d.Size {
		t.Fatalf("blob %s: digest %s, size %d; the descriptor says size %d", d.Digest, got, len(data), d.Size)
	}
	return data
}

func decodeJSON(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%v:\n%s", err, data)
	}
}

// readOCILayout reads an image layout whose index.json names one
// multi-platform index.
func readOCILayout(t *testing.T, dir string) ociLayout {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "oci-layout"))
	if err != nil {
		t.Fatal(err)
	}
	var marker struct {
		Version string `json:"imageLayoutVersion"`
	}
	if decodeJSON(t, raw, &marker); marker.Version != "1.0.0" {
		t.Errorf("oci-layout: version %q", marker.Version)
	}
	raw, err = os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var top ociIndex
	decodeJSON(t, raw, &top)
	if len(top.Manifests) != 1 || top.Manifests[0].MediaType != ociIndexType {
		t.Fatalf("index.json names %+v, want one image index", top.Manifests)
	}
	var idx ociIndex
	decodeJSON(t, blob(t, dir, top.Manifests[0]), &idx)
	layout := ociLayout{refName: top.Manifests[0].Annotations["org.opencontainers.image.ref.name"]}
	for _, d := range idx.Manifests {
		if d.MediaType != ociManifestType || d.Platform == nil {
			t.Fatalf("index entry %+v: want an OCI manifest with a platform", d)
		}
		var m ociManifest
		decodeJSON(t, blob(t, dir, d), &m)
		if m.Config.MediaType != ociConfigType {
			t.Errorf("config media type %q", m.Config.MediaType)
		}
		img := ociImage{platform: d.Platform.OS + "/" + d.Platform.Architecture}
		decodeJSON(t, blob(t, dir, m.Config), &img.config)
		if len(img.config.RootFS.DiffIDs) != len(m.Layers) {
			t.Fatalf("%s: %d diff_ids for %d layers", img.platform, len(img.config.RootFS.DiffIDs), len(m.Layers))
		}
		for i, l := range m.Layers {
			if l.MediaType != ociLayerGzip {
				t.Errorf("%s layer %d: media type %q", img.platform, i, l.MediaType)
			}
			zr, err := gzip.NewReader(bytes.NewReader(blob(t, dir, l)))
			if err != nil {
				t.Fatal(err)
			}
			tarData, err := io.ReadAll(zr)
			if err != nil {
				t.Fatal(err)
			}
			if got := sha256Digest(tarData); got != img.config.RootFS.DiffIDs[i] {
				t.Errorf("%s layer %d: uncompressed digest %s, diff_id %s", img.platform, i, got, img.config.RootFS.DiffIDs[i])
			}
			img.layers = append(img.layers, tarData)
		}
		layout.images = append(layout.images, img)
	}
	return layout
}

// imageFile is a file of an extracted image, as its layer's tar says.
type imageFile struct {
	hdr *tar.Header
}

// extract unpacks the image's layers into dir, in order, and returns what
// the tar headers say of every path. Paths that would leave dir fail.
func (img *ociImage) extract(t *testing.T, dir string) map[string]imageFile {
	t.Helper()
	files := map[string]imageFile{}
	for i, layer := range img.layers {
		eachTarEntry(t, fmt.Sprintf("layer %d", i), bytes.NewReader(layer), func(hdr *tar.Header, r io.Reader) {
			name := path.Clean(hdr.Name)
			if path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
				t.Fatalf("layer %d: path %q leaves the image", i, hdr.Name)
			}
			if err := writeImageFile(filepath.Join(dir, name), hdr, r); err != nil {
				t.Fatalf("layer %d: %s: %v", i, name, err)
			}
			files[name] = imageFile{hdr: hdr}
		})
	}
	return files
}

// eachTarEntry calls each for every entry of the tar r (called what in
// failures), with the entry's content.
func eachTarEntry(t *testing.T, what string, r io.Reader, each func(*tar.Header, io.Reader)) {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		each(hdr, tr)
	}
}

func writeImageFile(target string, hdr *tar.Header, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		return os.MkdirAll(target, 0o755)
	case tar.TypeSymlink:
		_ = os.Remove(target)
		return os.Symlink(hdr.Linkname, target)
	case tar.TypeReg:
		f, err := os.OpenFile(target, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, os.FileMode(hdr.Mode).Perm()|0o200)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, r); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	return fmt.Errorf("unexpected tar entry type %q", hdr.Typeflag)
}

// checkOCIArchive: the .oci.tar holds exactly the layout's files.
func checkOCIArchive(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	eachTarEntry(t, archive, f, func(hdr *tar.Header, r io.Reader) {
		if hdr.Typeflag != tar.TypeReg {
			return
		}
		n++
		want, err := os.ReadFile(filepath.Join(dir, hdr.Name))
		if err != nil {
			t.Errorf("%s: %s is not in the layout: %v", archive, hdr.Name, err)
			return
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %s differs from the layout's", archive, hdr.Name)
		}
	})
	if n < 4 {
		t.Errorf("%s holds %d files; an image layout has at least oci-layout, index.json and blobs", archive, n)
	}
}

// checkDockerTarball: a docker-save tarball (docker load, kind load
// image-archive) tagged ref, with its manifest's config and layers in it.
func checkDockerTarball(t *testing.T, file, ref string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := map[string]bool{}
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	eachTarEntry(t, file, f, func(hdr *tar.Header, r io.Reader) {
		names[hdr.Name] = true
		if hdr.Name == "manifest.json" {
			data, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			decodeJSON(t, data, &manifest)
		}
	})
	if len(manifest) != 1 || len(manifest[0].RepoTags) != 1 || manifest[0].RepoTags[0] != ref {
		t.Fatalf("%s: manifest.json %+v, want one image tagged %s", file, manifest, ref)
	}
	for _, name := range append([]string{manifest[0].Config}, manifest[0].Layers...) {
		if !names[name] {
			t.Errorf("%s: manifest.json names %s, which it does not hold", file, name)
		}
	}
}
