package images

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ulikunitz/xz"
)

// modName normalises a module name the way the kernel does: '-' and '_'
// are the same character.
func modName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// parseModinfo decodes the contents of a module's .modinfo section: NUL
// separated "key=value" strings. Keys may repeat (alias, depends on
// some kernels); values are returned in order.
func parseModinfo(b []byte) map[string][]string {
	info := map[string][]string{}
	for _, kv := range bytes.Split(b, []byte{0}) {
		k, v, ok := bytes.Cut(kv, []byte("="))
		if !ok || len(k) == 0 {
			continue
		}
		info[string(k)] = append(info[string(k)], string(v))
	}
	return info
}

// modinfoDepends is the list in a module's "depends=" entries.
func modinfoDepends(info map[string][]string) []string {
	var deps []string
	for _, v := range info["depends"] {
		for _, d := range strings.Split(v, ",") {
			if d = strings.TrimSpace(d); d != "" {
				deps = append(deps, modName(d))
			}
		}
	}
	return deps
}

// readModinfo returns the .modinfo section of a module file.
func readModinfo(data []byte) (map[string][]string, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, errors.New("no .modinfo section")
	}
	b, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf(".modinfo: %w", err)
	}
	return parseModinfo(b), nil
}

// moduleSet is the modules of one kernel, in a /lib/modules/VERSION dir.
type moduleSet struct {
	dir     string
	paths   map[string]string // name -> path relative to dir
	builtin map[string]bool
}

var moduleSuffixes = []string{".ko", ".ko.xz", ".ko.gz", ".ko.zst"}

// modulesOf is what an initramfs holds to load the modules roots of the kernel whose
// /lib/modules/VERSION is dir: them and their dependencies, in load order.
func modulesOf(dir string, roots []string) ([]loadedModule, error) {
	ms, err := openModules(dir)
	if err != nil {
		return nil, err
	}
	return ms.closure(roots)
}

func openModules(dir string) (*moduleSet, error) {
	ms := &moduleSet{dir: dir, paths: map[string]string{}, builtin: map[string]bool{}}
	err := filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		for _, s := range moduleSuffixes {
			if base, ok := strings.CutSuffix(d.Name(), s); ok {
				rel, _ := filepath.Rel(dir, p)
				ms.paths[modName(base)] = rel
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("modules in %s: %w", dir, err)
	}
	if len(ms.paths) == 0 {
		return nil, fmt.Errorf("no kernel modules under %s/kernel", dir)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			base := filepath.Base(strings.TrimSpace(sc.Text()))
			ms.builtin[modName(strings.TrimSuffix(base, ".ko"))] = true
		}
	}
	return ms, nil
}

// load returns a module's uncompressed bytes.
func (ms *moduleSet) load(name string) ([]byte, error) {
	rel, ok := ms.paths[name]
	if !ok {
		return nil, fmt.Errorf("module %s not found in %s", name, ms.dir)
	}
	data, err := os.ReadFile(filepath.Join(ms.dir, rel))
	if err != nil {
		return nil, err
	}
	switch {
	case strings.HasSuffix(rel, ".xz"):
		r, err := xz.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", rel, err)
		}
		return io.ReadAll(r)
	case strings.HasSuffix(rel, ".gz"):
		r, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", rel, err)
		}
		return io.ReadAll(r)
	case strings.HasSuffix(rel, ".zst"):
		cmd := exec.Command("zstd", "-dcq")
		cmd.Stdin = bytes.NewReader(data)
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("%s: zstd (install zstd): %w", rel, err)
		}
		return out, nil
	}
	return data, nil
}

// loadedModule is a module chosen for the image.
type loadedModule struct {
	Name string
	Path string // relative to the modules dir, without a compression suffix
	Data []byte
}

// moduleOrder returns the modules needed for roots in load order: every
// module after the modules it depends on (the "depends=" field of its
// .modinfo, what depmod would put in modules.dep). Roots built into the
// kernel are skipped.
func moduleOrder(roots []string, builtin func(string) bool, deps func(string) ([]string, error)) ([]string, error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var order []string
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("module dependency cycle: %s -> %s", strings.Join(chain, " -> "), name)
		}
		state[name] = visiting
		ds, err := deps(name)
		if err != nil {
			return err
		}
		for _, d := range ds {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = done
		order = append(order, name)
		return nil
	}
	for _, r := range roots {
		r = modName(r)
		if builtin != nil && builtin(r) {
			continue
		}
		if err := visit(r, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// closure loads the modules roots need, in load order.
func (ms *moduleSet) closure(roots []string) ([]loadedModule, error) {
	loaded := map[string]loadedModule{}
	order, err := moduleOrder(roots, func(n string) bool {
		_, isModule := ms.paths[n]
		return !isModule && ms.builtin[n]
	}, func(n string) ([]string, error) {
		data, err := ms.load(n)
		if err != nil {
			return nil, err
		}
		info, err := readModinfo(data)
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", n, err)
		}
		rel := ms.paths[n]
		for _, s := range moduleSuffixes[1:] {
			rel = strings.TrimSuffix(rel, strings.TrimPrefix(s, ".ko"))
		}
		loaded[n] = loadedModule{Name: n, Path: filepath.ToSlash(rel), Data: data}
		return modinfoDepends(info), nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]loadedModule, len(order))
	for i, n := range order {
		out[i] = loaded[n]
	}
	return out, nil
}
