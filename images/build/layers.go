package main

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// entry is one file of a layer: where it comes from on disk (empty for a
// folder made up here) and how it appears in the image.
type entry struct {
	src  string
	mode fs.FileMode
	uid  int
	link string
}

// extraDir is a folder the image needs that no package ships.
type extraDir struct {
	path string
	mode fs.FileMode
	uid  int
}

// dirLayer writes the union of the folders (a later one wins on the same
// path) and the extra folders as one layer: files sorted, owned by root
// unless said otherwise, every time set to mtime. The same inputs make the
// same bytes, hence the same digest.
func dirLayer(tarPath string, mtime time.Time, dirs []string, extra []extraDir) (v1.Layer, error) {
	entries := map[string]entry{}
	for _, dir := range dirs {
		if err := addFolder(entries, dir, 0); err != nil {
			return nil, err
		}
	}
	for _, d := range extra {
		addParents(entries, d.path)
		entries[d.path] = entry{mode: fs.ModeDir | d.mode, uid: d.uid}
	}
	return writeLayer(tarPath, mtime, entries)
}

// fileLayer is a layer with one executable at dest and its parent folders.
func fileLayer(tarPath string, mtime time.Time, src, dest string) (v1.Layer, error) {
	entries := map[string]entry{dest: {src: src, mode: 0o755}}
	addParents(entries, dest)
	return writeLayer(tarPath, mtime, entries)
}

func addParents(entries map[string]entry, p string) {
	for dir := path.Dir(p); dir != "." && dir != "/"; dir = path.Dir(dir) {
		if _, ok := entries[dir]; !ok {
			entries[dir] = entry{mode: fs.ModeDir | 0o755}
		}
	}
}

func writeLayer(tarPath string, mtime time.Time, entries map[string]entry) (v1.Layer, error) {
	if err := writeTar(tarPath, mtime, entries); err != nil {
		return nil, err
	}
	return tarball.LayerFromFile(tarPath, tarball.WithMediaType(types.OCILayer))
}

func writeTar(tarPath string, mtime time.Time, entries map[string]entry) error {
	f, err := os.Create(tarPath)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		if err := writeEntry(tw, name, entries[name], mtime); err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func writeEntry(tw *tar.Writer, name string, e entry, mtime time.Time) error {
	hdr := &tar.Header{Name: name, Mode: int64(e.mode.Perm()), Uid: e.uid, Gid: e.uid, ModTime: mtime, Format: tar.FormatPAX}
	// tar's bits for sticky, setuid and setgid are not fs.FileMode's.
	if e.mode&fs.ModeSticky != 0 {
		hdr.Mode |= 0o1000
	}
	if e.mode&fs.ModeSetgid != 0 {
		hdr.Mode |= 0o2000
	}
	if e.mode&fs.ModeSetuid != 0 {
		hdr.Mode |= 0o4000
	}
	switch {
	case e.mode.IsDir():
		hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
		return tw.WriteHeader(hdr)
	case e.mode&fs.ModeSymlink != 0:
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.link
		return tw.WriteHeader(hdr)
	case e.mode.IsRegular():
		src, err := os.Open(e.src)
		if err != nil {
			return err
		}
		defer src.Close()
		info, err := src.Stat()
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, info.Size()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err = io.Copy(tw, src)
		return err
	}
	return fmt.Errorf("unsupported file type %v", e.mode.Type())
}

// tarFolder writes the folder as a tar (an OCI image layout becomes an OCI
// archive), deterministically.
func tarFolder(dir, out string, mtime time.Time) error {
	entries := map[string]entry{}
	if err := addFolder(entries, dir, 0o022); err != nil {
		return err
	}
	return writeTar(out, mtime, entries)
}

// addFolder adds every file below dir to entries, under its path relative
// to dir, with the mode bits in clearBits cleared; a symbolic link stays one.
func addFolder(entries map[string]entry, dir string, clearBits fs.FileMode) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := d.Info() // WalkDir's entries are not followed: lstat's answer
		if err != nil {
			return err
		}
		e := entry{src: p, mode: info.Mode() &^ clearBits}
		if info.Mode()&fs.ModeSymlink != 0 {
			if e.link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		entries[filepath.ToSlash(rel)] = e
		return nil
	})
}
