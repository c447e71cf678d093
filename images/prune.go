package images

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Unused is something in the image cache that nothing uses (lab image prune).
type Unused struct {
	Path string `json:"path"`
	Kind string `json:"kind"` // "image", "kernel", "deb", "leftover"
	Why  string `json:"why"`
}

// leftoverAge is how old a build's *.tmp directory must be before prune takes it for the
// leftover of an interrupted build rather than one in progress.
const leftoverAge = time.Hour

// FindUnused lists what the cache at cache holds that nothing uses: images that are
// neither the newest of their kind (SSH server, and the distro and arch their manifest
// names) nor used (inUse reports a path inside them: a machine's kernel, initrd or disk
// backing file), kernels unpacked for no kept image, downloaded packages no kept image
// lists, and the *.tmp dirs of builds interrupted over an hour ago. Anything it does not
// recognise is kept.
func FindUnused(cache string, inUse func(dir string) bool) ([]Unused, error) {
	var out []Unused
	type img struct {
		dir   string
		kind  string
		built time.Time
		m     Manifest
	}
	dirs, err := filepath.Glob(filepath.Join(cache, "images", "*"))
	if err != nil {
		return nil, err
	}
	newest := map[string]*img{}
	var all []*img
	for _, d := range dirs {
		if strings.HasSuffix(d, ".tmp") {
			if old(d) {
				out = append(out, Unused{Path: d, Kind: "leftover", Why: "an interrupted build"})
			}
			continue
		}
		b, err := os.ReadFile(filepath.Join(d, "manifest.json"))
		if err != nil {
			continue // not an image lab knows: keep it
		}
		var m Manifest
		var kind struct {
			Distro string `json:"distro"`
			Arch   string `json:"arch"`
		}
		if json.Unmarshal(b, &m) != nil || json.Unmarshal(b, &kind) != nil || m.Built.IsZero() {
			continue
		}
		i := &img{dir: d, kind: m.SSHServer + "/" + kind.Distro + "/" + kind.Arch, built: m.Built, m: m}
		all = append(all, i)
		if n := newest[i.kind]; n == nil || i.built.After(n.built) {
			newest[i.kind] = i
		}
	}
	keptDebs := map[string]bool{}
	keptKernels := map[string]bool{}
	for _, i := range all {
		if newest[i.kind] != i && !inUse(i.dir) {
			out = append(out, Unused{Path: i.dir, Kind: "image", Why: fmt.Sprintf("built %s; %s is newer", i.built.Format(time.DateOnly), filepath.Base(newest[i.kind].dir))})
			continue
		}
		for _, p := range i.m.Packages {
			keptDebs[p.debFile()] = true
			if strings.HasPrefix(p.Name, "linux-image-") {
				keptKernels[filepath.Base(kernelPkgDir(cache, p))] = true
			}
		}
		if fi, err := os.Stat(filepath.Join(i.dir, "vmlinux")); err == nil {
			// --kernel images link their vmlinux from kernels/file-ID.
			ks, _ := filepath.Glob(filepath.Join(cache, "kernels", "*", "vmlinux"))
			for _, k := range ks {
				if kf, err := os.Stat(k); err == nil && os.SameFile(fi, kf) {
					keptKernels[filepath.Base(filepath.Dir(k))] = true
				}
			}
		}
	}
	if len(all) == 0 {
		return out, nil // nothing to judge kernels and packages by
	}
	kernels, _ := os.ReadDir(filepath.Join(cache, "kernels"))
	for _, e := range kernels {
		p := filepath.Join(cache, "kernels", e.Name())
		switch {
		case !e.IsDir():
		case strings.HasSuffix(e.Name(), ".tmp"):
			if old(p) {
				out = append(out, Unused{Path: p, Kind: "leftover", Why: "an interrupted build"})
			}
		case !keptKernels[e.Name()] && !inUse(p):
			out = append(out, Unused{Path: p, Kind: "kernel", Why: "no kept image was built from it"})
		}
	}
	debs, _ := filepath.Glob(filepath.Join(cache, "debs", "*.deb"))
	for _, d := range debs {
		if !keptDebs[filepath.Base(d)] {
			out = append(out, Unused{Path: d, Kind: "deb", Why: "no kept image lists it"})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func old(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && time.Since(fi.ModTime()) > leftoverAge
}

// Remove deletes what FindUnused found, under the cache's build lock (no build runs
// meanwhile).
func Remove(ctx context.Context, cache string, items []Unused) error {
	lock, err := lockCache(ctx, cache, nil)
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	defer lock.Unlock()
	for _, it := range items {
		if err := os.RemoveAll(it.Path); err != nil {
			return fmt.Errorf("images: %w", err)
		}
	}
	return nil
}
