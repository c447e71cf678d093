// Package labfile reads a lab file (lab up -f lab.yaml): one machine declared as data,
// its image (distro, architecture), size, shares, exposed host commands, Windows personality, environment policy
// and executable formats. Decoding is strict: an unknown key, a wrong type or a bad value
// is an error that names the file and the key (`lab.yaml: formats[1].magic: not hex: "zz"`).
package labfile

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v4"

	"lab/formats"
	"lab/images"
	"lab/share"
)

// Image is the lab file's name for the default image, lab's initramfs (images.DistroInitramfs).
const Image = "default"

// File is a parsed and validated lab file. Zero fields were not given (the CLI's defaults
// or flags apply).
type File struct {
	Path        string // as given to Parse
	Name        string
	Image       string // image or distro as written: "default", "initramfs", "debian", or ""
	Distro      string // images.DistroInitramfs or images.DistroDebian (image: default is the initramfs), or ""
	Arch        string // images.AMD64 or images.ARM64 (x86_64, aarch64 accepted), or ""
	MemoryMiB   int
	CPUs        int
	Scratch     *bool         // nil: not given
	Shares      []share.Share // HostPath absolute (a relative one in the file is taken from the file's directory), no Tag
	Expose      []Exposed
	Windows     *bool
	WindowsPath *bool
	// IsolatedWindows: a Wine prefix of the machine's own instead of the shared one
	// (--isolated-windows); nil: not given.
	IsolatedWindows *bool
	EnvAllow        []string
	Formats         []formats.Format // configured formats, interpreters resolved to host paths
}

// Exposed is a host command the guest may run by name.
type Exposed struct {
	Program string // as written: a name looked up in PATH or a path
	As      string // the guest's name for it; zero: the program's base name
}

// Options carry what validation needs from the host.
type Options struct {
	// LookPath resolves an interpreter's name to an absolute host path. Zero: names must
	// already be absolute paths.
	LookPath func(string) (string, error)
	// HostArch is the host's GOARCH. Zero: runtime.GOARCH. (Guests of either architecture
	// boot on either host; kept for callers.)
	HostArch string
}

// Error is a problem with one key of a lab file.
type Error struct {
	File string // the file's name as given
	Key  string // e.g. "formats[1].magic"; "" for the document itself
	Line int    // 1-based; 0 when unknown
	Msg  string
}

func (e *Error) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", e.File, e.Key, e.Msg)
}

// Parse reads and validates a lab file. name is used in error messages and to resolve
// relative share paths (the file's directory).
func Parse(name string, r io.Reader, opts Options) (*File, error) {
	data, err := io.ReadAll(io.LimitReader(r, 1<<20+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(data) > 1<<20 {
		return nil, &Error{File: name, Msg: "larger than 1 MiB"}
	}
	if opts.HostArch == "" {
		opts.HostArch = runtime.GOARCH
	}
	p := &parser{file: name, opts: opts, f: &File{Path: name}}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &Error{File: name, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if len(bytes.TrimSpace(data)) == 0 || doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, &Error{File: name, Msg: "empty: a lab file is a mapping of keys (name, memory, formats, ...)"}
	}
	if err := p.top(doc.Content[0]); err != nil {
		return nil, err
	}
	return p.f, nil
}

type parser struct {
	file string
	opts Options
	f    *File
}

func (p *parser) errf(key string, n *yaml.Node, format string, args ...any) error {
	e := &Error{File: p.file, Key: key, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line = n.Line
	}
	return e
}

// mapping walks a mapping node, calling fn for each key in order; unknown keys and
// repeated keys are errors naming them.
func (p *parser) mapping(key string, n *yaml.Node, known []string, fn func(k string, v *yaml.Node) error) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		return p.errf(key, n, "want a mapping of keys, got %s", kindName(n))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, v := n.Content[i], n.Content[i+1]
		k := kn.Value
		full := join(key, k)
		if kn.Kind != yaml.ScalarNode || k == "<<" {
			return p.errf(full, kn, "not a plain key")
		}
		if !contains(known, k) {
			return p.errf(full, kn, "unknown key (known here: %s)", strings.Join(known, ", "))
		}
		if seen[k] {
			return p.errf(full, kn, "given twice")
		}
		seen[k] = true
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

func join(key, k string) string {
	if key == "" {
		return k
	}
	return key + "." + k
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return strconv.Quote(n.Value)
	}
	return "something else"
}

func (p *parser) str(key string, n *yaml.Node) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return "", p.errf(key, n, "want a string, got %s", kindName(n))
	}
	return n.Value, nil
}

func (p *parser) boolean(key string, n *yaml.Node) (*bool, error) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		return nil, p.errf(key, n, "want true or false, got %s", kindName(n))
	}
	b := n.Value == "true" || n.Value == "True" || n.Value == "TRUE"
	return &b, nil
}

func (p *parser) integer(key string, n *yaml.Node, min, max int) (int, error) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
		return 0, p.errf(key, n, "want a whole number, got %s", kindName(n))
	}
	v, err := strconv.Atoi(n.Value)
	if err != nil || v < min || v > max {
		return 0, p.errf(key, n, "want a number from %d to %d, got %s", min, max, n.Value)
	}
	return v, nil
}

func (p *parser) list(key string, n *yaml.Node) ([]*yaml.Node, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(key, n, "want a list, got %s", kindName(n))
	}
	out := make([]*yaml.Node, len(n.Content))
	for i, c := range n.Content {
		if c.Kind == yaml.AliasNode {
			c = c.Alias
		}
		out[i] = c
	}
	return out, nil
}

// strings reads a list of strings, or one string as a one-element list.
func (p *parser) strs(key string, n *yaml.Node) ([]string, error) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
		return []string{n.Value}, nil
	}
	items, err := p.list(key, n)
	if err != nil {
		return nil, err
	}
	var out []string
	for i, c := range items {
		s, err := p.str(fmt.Sprintf("%s[%d]", key, i), c)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

var topKeys = []string{"name", "image", "distro", "arch", "memory", "cpus", "scratch", "shares", "expose", "windows", "windows_path", "isolated_windows", "env", "formats"}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func (p *parser) top(n *yaml.Node) error {
	f := p.f
	var archNode, isolatedNode *yaml.Node
	err := p.mapping("", n, topKeys, func(k string, v *yaml.Node) error {
		var err error
		switch k {
		case "name":
			if f.Name, err = p.str(k, v); err == nil && !validName.MatchString(f.Name) {
				err = p.errf(k, v, "%q: want letters, digits, '.', '_' or '-' (at most 63, not starting with a punctuation mark)", f.Name)
			}
		case "image", "distro":
			var s string
			if s, err = p.str(k, v); err != nil {
				return err
			}
			switch s {
			case Image, images.DistroInitramfs:
				f.Distro = images.DistroInitramfs
			case images.DistroDebian:
				f.Distro = images.DistroDebian
			default:
				return p.errf(k, v, "%q: want %s (lab's initramfs, the default; also named %s) or %s (Debian 12 with systemd on a disk of its own)", s, images.DistroInitramfs, Image, images.DistroDebian)
			}
			if f.Image != "" {
				err = p.errf(k, v, "image and distro name the same thing; give one")
			}
			f.Image = s
		case "arch":
			var s string
			if s, err = p.str(k, v); err == nil {
				archNode = v
				if f.Arch = goarch(s); f.Arch != images.AMD64 && f.Arch != images.ARM64 {
					err = p.errf(k, v, "%q: want %s or %s (x86_64 and aarch64 name the same); run programs of other architectures through a format (qemu: %s)", s, images.AMD64, images.ARM64, strings.Join(formats.QEMUArches(), ", "))
				}
			}
		case "memory":
			f.MemoryMiB, err = p.memory(k, v)
		case "cpus":
			f.CPUs, err = p.integer(k, v, 1, 64)
		case "scratch":
			f.Scratch, err = p.boolean(k, v)
		case "windows":
			f.Windows, err = p.boolean(k, v)
		case "windows_path":
			f.WindowsPath, err = p.boolean(k, v)
		case "isolated_windows":
			isolatedNode = v
			f.IsolatedWindows, err = p.boolean(k, v)
		case "shares":
			err = p.shares(k, v)
		case "expose":
			err = p.expose(k, v)
		case "env":
			err = p.env(k, v)
		case "formats":
			err = p.formats(k, v)
		}
		return err
	})
	if err != nil {
		return err
	}
	switch {
	case f.Distro == images.DistroDebian && f.Arch == images.ARM64:
		return p.errf("arch", archNode, "%q: the Debian image is built for amd64 guests only (an arm64 guest boots lab's initramfs)", archNode.Value)
	case f.IsolatedWindows != nil && *f.IsolatedWindows && f.Windows != nil && !*f.Windows:
		return p.errf("isolated_windows", isolatedNode, "a Wine prefix of the machine's own needs the Windows personality, and windows is false")
	}
	return nil
}

// goarch maps common spellings to GOARCH.
func goarch(s string) string {
	switch s {
	case "x86_64", "x86-64", "amd64":
		return "amd64"
	case "aarch64", "arm64":
		return "arm64"
	}
	return s
}

// memory is a number of MiB, or a string with a unit: "512M", "2G", "1GiB".
func (p *parser) memory(key string, n *yaml.Node) (int, error) {
	const lo, hi = 128, 1 << 20
	if n.Kind == yaml.ScalarNode && n.Tag == "!!int" {
		return p.integer(key, n, lo, hi)
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return 0, p.errf(key, n, "want MiB (1024) or a size (2G, 512M), got %s", kindName(n))
	}
	s := strings.TrimSuffix(strings.TrimSuffix(n.Value, "iB"), "B")
	mul := 0
	switch {
	case strings.HasSuffix(s, "M"):
		mul = 1
	case strings.HasSuffix(s, "G"):
		mul = 1024
	}
	v, err := strconv.Atoi(strings.TrimSpace(s[:max(len(s)-1, 0)]))
	if mul == 0 || err != nil || v*mul < lo || v*mul > hi {
		return 0, p.errf(key, n, "%q: want MiB (1024) or a size from 128M to 1024G (2G, 512M)", n.Value)
	}
	return v * mul, nil
}

func (p *parser) shares(key string, n *yaml.Node) error {
	items, err := p.list(key, n)
	if err != nil {
		return err
	}
	base := filepath.Dir(p.file)
	for i, it := range items {
		k := fmt.Sprintf("%s[%d]", key, i)
		var sh share.Share
		err := p.mapping(k, it, []string{"host", "guest", "readonly"}, func(kk string, v *yaml.Node) error {
			var err error
			switch kk {
			case "host":
				sh.HostPath, err = p.str(join(k, kk), v)
			case "guest":
				sh.GuestPath, err = p.str(join(k, kk), v)
			case "readonly":
				var b *bool
				if b, err = p.boolean(join(k, kk), v); err == nil {
					sh.ReadOnly = *b
				}
			}
			return err
		})
		if err != nil {
			return err
		}
		switch {
		case sh.HostPath == "":
			return p.errf(join(k, "host"), it, "missing: the host directory to share")
		case sh.GuestPath == "":
			return p.errf(join(k, "guest"), it, "missing: where the guest mounts it (an absolute path)")
		case !strings.HasPrefix(sh.GuestPath, "/") || strings.ContainsAny(sh.GuestPath, ": \t\n"):
			return p.errf(join(k, "guest"), it, "%q: want an absolute guest path without spaces or ':'", sh.GuestPath)
		case strings.ContainsAny(sh.HostPath, ":\n"):
			return p.errf(join(k, "host"), it, "%q: a host path with ':' cannot be shared", sh.HostPath)
		}
		if !filepath.IsAbs(sh.HostPath) {
			sh.HostPath = filepath.Join(base, sh.HostPath)
		}
		p.f.Shares = append(p.f.Shares, sh)
	}
	return nil
}

func (p *parser) expose(key string, n *yaml.Node) error {
	items, err := p.list(key, n)
	if err != nil {
		return err
	}
	for i, it := range items {
		k := fmt.Sprintf("%s[%d]", key, i)
		var e Exposed
		if it.Kind == yaml.ScalarNode {
			if e.Program, err = p.str(k, it); err != nil {
				return err
			}
		} else if err := p.mapping(k, it, []string{"program", "as"}, func(kk string, v *yaml.Node) error {
			var err error
			switch kk {
			case "program":
				e.Program, err = p.str(join(k, kk), v)
			case "as":
				e.As, err = p.str(join(k, kk), v)
			}
			return err
		}); err != nil {
			return err
		}
		if e.Program == "" {
			return p.errf(join(k, "program"), it, "missing: the host program to expose")
		}
		p.f.Expose = append(p.f.Expose, e)
	}
	return nil
}

func (p *parser) env(key string, n *yaml.Node) error {
	return p.mapping(key, n, []string{"allow"}, func(k string, v *yaml.Node) error {
		names, err := p.strs(join(key, k), v)
		if err != nil {
			return err
		}
		for i, name := range names {
			if name == "" || name == "*" || strings.ContainsAny(name, "=\x00 ") {
				return p.errf(fmt.Sprintf("%s.%s[%d]", key, k, i), v, "%q: want a variable name, or a prefix ending in *", name)
			}
		}
		p.f.EnvAllow = append(p.f.EnvAllow, names...)
		return nil
	})
}

var formatKeys = []string{"name", "magic", "mask", "offset", "extension", "qemu", "runner", "interpreter"}

func (p *parser) formats(key string, n *yaml.Node) error {
	items, err := p.list(key, n)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, it := range items {
		k := fmt.Sprintf("%s[%d]", key, i)
		f, err := p.format(k, it)
		if err != nil {
			return err
		}
		if seen[f.Name] {
			return p.errf(join(k, "name"), it, "%q is defined twice", f.Name)
		}
		seen[f.Name] = true
		p.f.Formats = append(p.f.Formats, f)
	}
	return nil
}

func (p *parser) format(k string, it *yaml.Node) (formats.Format, error) {
	var f formats.Format
	var runner, qemu string
	var interp []string
	var offsetGiven bool
	var maskNode *yaml.Node
	err := p.mapping(k, it, formatKeys, func(kk string, v *yaml.Node) error {
		key := join(k, kk)
		var err error
		switch kk {
		case "name":
			if f.Name, err = p.str(key, v); err == nil {
				if formats.IsBuiltin(f.Name) {
					err = p.errf(key, v, "%q is built in; pick another name", f.Name)
				} else if e := formats.CheckName(f.Name); e != nil {
					err = p.errf(key, v, "%s", strings.TrimPrefix(e.Error(), "formats: "))
				}
			}
		case "magic":
			f.Magic, err = p.hex(key, v)
		case "mask":
			maskNode = v
			f.Mask, err = p.hex(key, v)
		case "offset":
			offsetGiven = true
			f.Offset, err = p.integer(key, v, 0, formats.MaxMagicEnd-1)
		case "extension":
			var s string
			if s, err = p.str(key, v); err == nil {
				f.Extension = strings.TrimPrefix(s, ".")
				if e := formats.CheckExtension(f.Extension); e != nil {
					err = p.errf(key, v, "%s", e)
				}
			}
		case "qemu":
			if qemu, err = p.str(key, v); err == nil {
				if _, _, ok := formats.QEMUELF(qemu); !ok {
					err = p.errf(key, v, "%q: want one of %s", qemu, strings.Join(formats.QEMUArches(), ", "))
				}
			}
		case "runner":
			if runner, err = p.str(key, v); err == nil {
				switch formats.Kind(runner) {
				case formats.Exec, formats.Wine, formats.Interpreter:
				default:
					err = p.errf(key, v, "%q: want exec, wine or interpreter", runner)
				}
			}
		case "interpreter":
			if interp, err = p.strs(key, v); err == nil && (len(interp) == 0 || interp[0] == "") {
				err = p.errf(key, v, "empty: want the host program and its arguments, e.g. [java, -jar]")
			}
		}
		return err
	})
	if err != nil {
		return f, err
	}
	if f.Name == "" {
		return f, p.errf(join(k, "name"), it, "missing: every format needs a name")
	}
	// What the guest matches: exactly one of magic, extension, qemu.
	given := 0
	for _, b := range []bool{len(f.Magic) > 0, f.Extension != "", qemu != ""} {
		if b {
			given++
		}
	}
	switch {
	case given == 0:
		return f, p.errf(k, it, "needs one of magic, extension or qemu")
	case given > 1:
		return f, p.errf(k, it, "give one of magic, extension or qemu, not several")
	case qemu != "" && (maskNode != nil || offsetGiven):
		return f, p.errf(k, it, "qemu sets the magic, mask and offset itself")
	case f.Extension != "" && (maskNode != nil || offsetGiven):
		return f, p.errf(k, it, "mask and offset go with magic, not extension")
	case maskNode != nil && len(f.Mask) != len(f.Magic):
		return f, p.errf(join(k, "mask"), maskNode, "%d bytes, the magic has %d", len(f.Mask), len(f.Magic))
	case f.Offset+len(f.Magic) > formats.MaxMagicEnd:
		return f, p.errf(join(k, "magic"), it, "offset + length is %d: the magic must lie in the first %d bytes", f.Offset+len(f.Magic), formats.MaxMagicEnd)
	}
	if qemu != "" {
		f.Magic, f.Mask, _ = formats.QEMUELF(qemu)
		if interp == nil && runner == "" {
			interp = []string{"qemu-" + qemu + "-static"}
		}
	}
	// How the host runs it.
	switch {
	case runner == "" && interp != nil, runner == string(formats.Interpreter):
		if interp == nil {
			return f, p.errf(join(k, "interpreter"), it, "missing: runner interpreter needs the host program, e.g. interpreter: [python3]")
		}
		prog, err := p.lookPath(interp[0])
		if err != nil {
			return f, p.errf(join(k, "interpreter"), it, "%s", err)
		}
		f.Runner = formats.Runner{Kind: formats.Interpreter, Command: append([]string{prog}, interp[1:]...)}
	case interp != nil:
		return f, p.errf(join(k, "interpreter"), it, "only with runner interpreter (runner is %s)", runner)
	case runner == "":
		f.Runner = formats.Runner{Kind: formats.Exec}
	default:
		f.Runner = formats.Runner{Kind: formats.Kind(runner)}
	}
	if err := f.Validate(); err != nil {
		return f, p.errf(k, it, "%s", strings.TrimPrefix(err.Error(), "formats: "))
	}
	return f, nil
}

func (p *parser) lookPath(prog string) (string, error) {
	if filepath.IsAbs(prog) {
		return filepath.Clean(prog), nil
	}
	if p.opts.LookPath == nil {
		return "", fmt.Errorf("%q: want an absolute host path", prog)
	}
	abs, err := p.opts.LookPath(prog)
	if err != nil {
		var ee interface{ Unwrap() error }
		if errors.As(err, &ee) && ee.Unwrap() != nil {
			err = ee.Unwrap()
		}
		return "", fmt.Errorf("%s: not found on the host (%v)", prog, err)
	}
	if abs, err = filepath.Abs(abs); err != nil {
		return "", err
	}
	return abs, nil
}

// hex decodes a magic or mask: hex digits, optionally in pairs separated by spaces, with
// an optional 0x or \x per byte ("7f454c46", "7f 45 4c 46", "\x7fELF" is not hex).
func (p *parser) hex(key string, n *yaml.Node) ([]byte, error) {
	s, err := p.str(key, n)
	if err != nil {
		return nil, err
	}
	clean := strings.NewReplacer(" ", "", "\\x", "", "0x", "").Replace(s)
	b, err := hex.DecodeString(clean)
	if err != nil || len(b) == 0 {
		return nil, p.errf(key, n, "not hex: %q", s)
	}
	if len(b) > formats.MaxMagicEnd {
		return nil, p.errf(key, n, "%d bytes: at most %d", len(b), formats.MaxMagicEnd)
	}
	return b, nil
}
