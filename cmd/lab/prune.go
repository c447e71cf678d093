package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"lab/images"
	"lab/internal/xdg"
	"lab/machine"
	"lab/pefixtures"
	"lab/vm"
	"lab/wineprefix"
)

func newImagePruneCommand() *cobra.Command {
	var dryRun bool
	var cache string
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove cached images, kernels and templates nothing uses",
		Long: `prune removes from the cache ($XDG_CACHE_HOME/lab or ~/.cache/lab) what no
machine uses and lab would not use now:
  images      but the newest of each kind (SSH server, distro, arch) and any that
              a machine's instance.json or machine.json names, or that a machine's
              disk overlay is backed by
  kernels     unpacked for no kept image
  debs        downloaded packages no kept image lists
  Wine        the prefix template of a Wine version other than the installed one
  fixtures    Windows programs built by another version of lab
  leftovers   of builds interrupted over an hour ago
--dry-run lists them with their sizes and removes nothing. Machines' data (Wine
prefixes, disks) is not touched: lab list shows it, lab delete removes it.`,
		Example: `  lab image prune --dry-run
  lab image prune`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cache == "" {
				var err error
				if cache, err = xdg.Dir(xdg.Cache); err != nil {
					return err
				}
			}
			items, err := findUnused(cmd.Context(), cache)
			if err != nil {
				return err
			}
			return prune(cmd.Context(), cmd.OutOrStdout(), cache, items, dryRun)
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be removed, with sizes; remove nothing")
	cmd.Flags().StringVar(&cache, "cache-dir", "", "cache directory (default $XDG_CACHE_HOME/lab or ~/.cache/lab)")
	return cmd
}

// unusedItem is one thing prune removes.
type unusedItem struct {
	images.Unused
	Bytes int64
}

// findUnused lists the cache's unused images, kernels, packages, Wine templates and fixture
// builds, with their sizes.
func findUnused(ctx context.Context, cache string) ([]unusedItem, error) {
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
	out := make([]unusedItem, len(found))
	for i, f := range found {
		out[i] = unusedItem{Unused: f, Bytes: machine.DiskUse(f.Path)}
	}
	return out, nil
}

// prune prints the items and, unless dryRun, removes them.
func prune(ctx context.Context, w io.Writer, cache string, items []unusedItem, dryRun bool) error {
	var total int64
	var imgs []images.Unused
	var tmpls []string
	for _, it := range items {
		total += it.Bytes
		fmt.Fprintf(w, "%-9s %8s  %s (%s)\n", it.Kind, humanBytes(it.Bytes), it.Path, it.Why)
		if it.Kind == "wine" {
			tmpls = append(tmpls, it.Path)
		} else {
			imgs = append(imgs, it.Unused)
		}
	}
	switch {
	case len(items) == 0:
		fmt.Fprintf(w, "nothing to prune in %s\n", cache)
		return nil
	case dryRun:
		fmt.Fprintf(w, "would free %s (lab image prune without --dry-run removes them)\n", humanBytes(total))
		return nil
	}
	if err := images.Remove(ctx, cache, imgs); err != nil {
		return err
	}
	if err := wineprefix.RemoveTemplates(ctx, cache, tmpls); err != nil {
		return err
	}
	fmt.Fprintf(w, "freed %s\n", humanBytes(total))
	return nil
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
	base, err := machine.DataDir("")
	if err != nil {
		return nil, err
	}
	m, _ := filepath.Glob(filepath.Join(base, "*", machine.FileMachineRecord))
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
