package machine

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"lab/images"
	"lab/internal/xdg"
	"lab/pefixtures"
	"lab/vm"
	"lab/wineprefix"
)

// Unused is one thing in the cache that no machine uses and lab would not use now (lab
// image prune), with its size.
type Unused struct {
	images.Unused
	Bytes int64
}

// FindUnused lists the cache's unused images, kernels, packages, Wine templates and fixture
// builds, with their sizes. What a machine uses is what its records name: any absolute path
// in a state dir's instance.json or a data dir's machine.json, and the backing file of its
// disk overlays. A record that is not JSON stops it: nothing a machine might use is judged.
func FindUnused(ctx context.Context, cache string) ([]Unused, error) {
	refs, err := machineReferences()
	if err != nil {
		return nil, err
	}
	inUse := func(dir string) bool {
		for _, r := range refs {
			if r == dir || strings.HasPrefix(r, dir+"/") {
				return true
			}
		}
		return false
	}
	found, err := images.FindUnused(cache, inUse)
	if err != nil {
		return nil, err
	}
	for _, d := range wineprefix.UnusedTemplates(ctx, cache) {
		found = append(found, images.Unused{Path: d, Kind: "wine", Why: "a template of another Wine version, or an interrupted one"})
	}
	if key, err := pefixtures.CacheKey(); err == nil {
		ents, _ := os.ReadDir(filepath.Join(cache, "pefixtures"))
		for _, e := range ents {
			if e.IsDir() && e.Name() != key {
				found = append(found, images.Unused{Path: filepath.Join(cache, "pefixtures", e.Name()), Kind: "fixtures", Why: "built by another version of lab"})
			}
		}
	}
	out := make([]Unused, len(found))
	for i, f := range found {
		out[i] = Unused{Unused: f, Bytes: DiskUse(f.Path)}
	}
	return out, nil
}

// RemoveUnused removes what FindUnused found: images, kernels, packages, fixture builds
// and leftovers under the cache's lock (images.Remove), Wine templates under theirs.
func RemoveUnused(ctx context.Context, cache string, items []Unused) error {
	var imgs []images.Unused
	var tmpls []string
	for _, it := range items {
		if it.Kind == "wine" {
			tmpls = append(tmpls, it.Path)
		} else {
			imgs = append(imgs, it.Unused)
		}
	}
	if err := images.Remove(ctx, cache, imgs); err != nil {
		return err
	}
	return wineprefix.RemoveTemplates(ctx, cache, tmpls)
}

// machineReferences are the paths every machine's records name (instance.json of each
// state dir, machine.json of each data dir) and the backing files of their disk overlays:
// what prune must keep.
func machineReferences() ([]string, error) {
	var refs []string
	var files []string
	if base, err := xdg.Dir(xdg.State); err == nil {
		m, _ := filepath.Glob(filepath.Join(base, "*", vm.FileInstance))
		files = append(files, m...)
		q, _ := filepath.Glob(filepath.Join(base, "*", "*.qcow2"))
		refs = append(refs, backingFiles(q)...)
	}
	base, err := DataDir("")
	if err != nil {
		return nil, err
	}
	m, _ := filepath.Glob(filepath.Join(base, "*", FileMachineRecord))
	files = append(files, m...)
	q, _ := filepath.Glob(filepath.Join(base, "*", "*.qcow2"))
	refs = append(refs, backingFiles(q)...)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var v any
		if json.Unmarshal(b, &v) != nil {
			return nil, fmt.Errorf("%s is not JSON: not pruning anything a machine might use (lab delete the machine, or fix the file)", f)
		}
		refs = append(refs, jsonStrings(v)...)
	}
	for i, r := range refs {
		refs[i] = filepath.Clean(r)
	}
	return refs, nil
}

// jsonStrings collects every absolute path among v's strings (a path may also be one word
// of a longer string: QEMU's argv names files as "file=PATH,...").
func jsonStrings(v any) []string {
	var out []string
	switch x := v.(type) {
	case string:
		for _, w := range strings.FieldsFunc(x, func(r rune) bool { return r == ',' || r == '=' || r == ' ' || r == ':' }) {
			if filepath.IsAbs(w) {
				out = append(out, w)
			}
		}
	case []any:
		for _, e := range x {
			out = append(out, jsonStrings(e)...)
		}
	case map[string]any:
		for _, e := range x {
			out = append(out, jsonStrings(e)...)
		}
	}
	return out
}

// backingFiles reads the backing file names of qcow2 images (the header's
// backing_file_offset and backing_file_size), relative names resolved against the image.
func backingFiles(paths []string) []string {
	var out []string
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		var h [20]byte
		if _, err := io.ReadFull(f, h[:]); err == nil && string(h[:4]) == "QFI\xfb" {
			off, n := binary.BigEndian.Uint64(h[8:16]), binary.BigEndian.Uint32(h[16:20])
			if off != 0 && n > 0 && n <= 1023 {
				name := make([]byte, n)
				if _, err := f.ReadAt(name, int64(off)); err == nil {
					b := string(name)
					if !filepath.IsAbs(b) {
						b = filepath.Join(filepath.Dir(p), b)
					}
					out = append(out, b)
				}
			}
		}
		f.Close()
	}
	return out
}
