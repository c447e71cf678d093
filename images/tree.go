package images

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// tree is the unpacked contents of the userland packages, in memory (a
// few tens of MB): the image takes single files out of it.
type tree struct {
	nodes map[string]*node // by clean absolute path
}

type node struct {
	mode fs.FileMode
	data []byte
	link string
	pkg  string
}

func newTree() *tree { return &tree{nodes: map[string]*node{"/": {mode: fs.ModeDir | 0o755}}} }

// add records one tar entry of package pkg.
func (t *tree) add(pkg string, h *tar.Header, r io.Reader) error {
	p := path.Clean("/" + h.Name)
	switch h.Typeflag {
	case tar.TypeDir:
		t.nodes[p] = &node{mode: fs.ModeDir | fs.FileMode(h.Mode).Perm(), pkg: pkg}
	case tar.TypeSymlink:
		t.nodes[p] = &node{mode: fs.ModeSymlink | 0o777, link: h.Linkname, pkg: pkg}
	case tar.TypeLink:
		target, ok := t.nodes[path.Clean("/"+h.Linkname)]
		if !ok {
			return fmt.Errorf("%s: hard link to missing %s", h.Name, h.Linkname)
		}
		c := *target
		t.nodes[p] = &c
	case tar.TypeReg:
		data, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		t.nodes[p] = &node{mode: h.FileInfo().Mode() &^ fs.ModeType, data: data, pkg: pkg}
	}
	return nil
}

// resolve follows symlinks in every component of p. It returns the final
// path (a non-link node) and the symlinks met on the way, which the image
// must also hold for the original path to work.
func (t *tree) resolve(p string) (string, []string, error) {
	var links []string
	p = path.Clean("/" + p)
	for hops := 0; hops < 40; hops++ {
		parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
		cur := "/"
		changed := false
		for i, part := range parts {
			next := path.Join(cur, part)
			n, ok := t.nodes[next]
			if !ok {
				return "", nil, fs.ErrNotExist
			}
			if n.mode&fs.ModeSymlink != 0 {
				links = append(links, next)
				target := n.link
				if !path.IsAbs(target) {
					target = path.Join(cur, target)
				}
				p = path.Join(append([]string{target}, parts[i+1:]...)...)
				changed = true
				break
			}
			cur = next
		}
		if !changed {
			return p, links, nil
		}
	}
	return "", nil, fmt.Errorf("%s: too many levels of symbolic links", p)
}

// files returns the image entries for paths: each file, the symlinks
// leading to it, with their modes from the packages.
func (t *tree) files(paths []string) []File {
	var out []File
	for _, p := range paths {
		n := t.nodes[p]
		f := File{Path: p, Mode: n.mode, Data: n.data, Linkname: n.link}
		out = append(out, f)
	}
	return out
}

// elfDirs are the directories the dynamic loader of Debian's glibc searches
// when there is no ld.so.cache (the image has none).
// Both multiarch triplets: the class and machine check in findLib keeps the other
// architecture's libraries out.
var elfDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib", "/usr/lib"}

// closure returns the paths (files and the symlinks to them) of the
// programs named by roots plus every shared object they need, transitively:
// PT_INTERP and DT_NEEDED entries, looked up in DT_RUNPATH/DT_RPATH and the
// loader's default directories, inside the tree only, never on the host.
func (t *tree) closure(roots []string) ([]string, error) {
	seen := map[string]bool{}
	var order []string
	add := func(p string) { // p is a resolved or link path
		if !seen[p] {
			seen[p] = true
			order = append(order, p)
		}
	}
	queue := append([]string(nil), roots...)
	for len(queue) > 0 {
		want := queue[0]
		queue = queue[1:]
		final, links, err := t.resolve(want)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", want, err)
		}
		for _, l := range links {
			add(l)
		}
		if seen[final] {
			continue
		}
		add(final)
		n := t.nodes[final]
		if n.mode&fs.ModeDir != 0 || len(n.data) < 4 || !bytes.HasPrefix(n.data, []byte(elf.ELFMAG)) {
			continue // scripts and data files need nothing more
		}
		needs, err := elfNeeds(final, n.data)
		if err != nil {
			return nil, err
		}
		for _, need := range needs {
			lib, err := t.findLib(need, final, n.data)
			if err != nil {
				return nil, fmt.Errorf("%s (needed by %s, package %s): %w", need.name, final, n.pkg, err)
			}
			queue = append(queue, lib)
		}
	}
	sort.Strings(order)
	return order, nil
}

type elfNeed struct {
	name   string   // soname or absolute interpreter path
	search []string // DT_RUNPATH/DT_RPATH directories ($ORIGIN expanded)
}

func elfNeeds(p string, data []byte) ([]elfNeed, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	var needs []elfNeed
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			b, err := io.ReadAll(prog.Open())
			if err != nil {
				return nil, fmt.Errorf("%s: PT_INTERP: %w", p, err)
			}
			needs = append(needs, elfNeed{name: string(bytes.TrimRight(b, "\x00"))})
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		if errors.Is(err, elf.ErrNoSymbols) {
			return needs, nil
		}
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	var search []string
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		vals, _ := f.DynString(tag)
		for _, v := range vals {
			for _, d := range strings.Split(v, ":") {
				d = strings.ReplaceAll(d, "$ORIGIN", path.Dir(p))
				d = strings.ReplaceAll(d, "${ORIGIN}", path.Dir(p))
				if path.IsAbs(d) {
					search = append(search, d)
				}
			}
		}
	}
	for _, l := range libs {
		needs = append(needs, elfNeed{name: l, search: search})
	}
	return needs, nil
}

// findLib finds need in the tree and checks it is an ELF file of the same
// class and machine as the program needing it.
func (t *tree) findLib(need elfNeed, from string, fromData []byte) (string, error) {
	var cands []string
	if strings.Contains(need.name, "/") {
		cands = []string{need.name}
	} else {
		for _, d := range append(need.search, elfDirs...) {
			cands = append(cands, path.Join(d, need.name))
		}
	}
	want, _ := elfIdent(fromData)
	for _, c := range cands {
		final, _, err := t.resolve(c)
		if err != nil {
			continue
		}
		if got, ok := elfIdent(t.nodes[final].data); ok && got == want {
			return c, nil
		}
	}
	return "", errors.New("not found in the image's packages: add the library's package to the recipe")
}

// elfIdent is the class and machine of an ELF file.
func elfIdent(data []byte) ([2]int, bool) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return [2]int{}, false
	}
	defer f.Close()
	return [2]int{int(f.Class), int(f.Machine)}, true
}
