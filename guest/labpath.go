package guest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"syscall"
	"unicode/utf8"
)

// PathMode is a wslpath/labpath translation, named after wslpath's options.
type PathMode byte

const (
	ToGuest     PathMode = 'u' // host (Windows) path to guest path (the default)
	ToHost      PathMode = 'w' // guest path to host path (with a drive share: C:\x)
	ToHostMixed PathMode = 'm' // as ToHost, with '/' instead of '\'
)

var (
	// ErrNotRepresentable: the path is valid but the host cannot name it (no share or drive
	// covers it). wslpath never meets it (it has \\wsl.localhost for the rest of the Linux
	// file system); lab's host cannot open such paths, so it refuses them.
	ErrNotRepresentable = errors.New("Result not representable")
	// ErrInvalidPath is wslpath's EINVAL (its strerror text): a path it cannot parse or
	// canonicalise (a ".." above the root, a Windows path of no known form, an unmapped drive).
	ErrInvalidPath = errors.New("Invalid argument")
)

// PathEnv is what a translation needs from the process besides the configuration.
type PathEnv struct {
	Cwd string // the guest working directory (absolute)
	// Distro is $WSL_DISTRO_NAME: -u accepts \\wsl.localhost\Distro\... and \\wsl$\Distro\...
	// (WSL's names for the Linux file system). Empty: such paths are refused, as in WSL.
	Distro string
	// Realpath resolves symlinks of an absolute guest path (filepath.EvalSymlinks); -w and
	// -m use it as WSL's wslpath does (realpath(3), for paths that exist). Nil: no
	// resolution. It must return an error satisfying errors.Is(err, fs.ErrNotExist) for a
	// missing path.
	Realpath func(string) (string, error)
}

// TranslatePath translates p between guest and host through shares, as wslpath does (see
// PathEnv.Translate); cwd is the guest working directory.
func TranslatePath(shares []Share, mode PathMode, p, cwd string, abs bool) (string, error) {
	return translate(shares, mode, p, abs, PathEnv{Cwd: cwd})
}

// Translate is TranslatePath through the config's shares and drives.
func (c *Config) Translate(mode PathMode, p, cwd string, abs bool) (string, error) {
	return TranslatePath(c.pathShares(), mode, p, cwd, abs)
}

// TranslateEnv is Translate with the whole PathEnv (distro name, symlink resolution).
func (c *Config) TranslateEnv(mode PathMode, p string, abs bool, env PathEnv) (string, error) {
	return translate(c.pathShares(), mode, p, abs, env)
}

// pathShares merges the drives into the shares: a drive whose guest path is a share's gives
// that share its letter (so host paths under it translate too); another drive becomes a
// share with no host side, used only for drive paths.
func (c *Config) pathShares() []Share {
	if len(c.Drives) == 0 {
		return c.Shares
	}
	out := append([]Share(nil), c.Shares...)
	for _, d := range c.Drives {
		merged := false
		for i := range out {
			if out[i].GuestPath == d.Guest {
				out[i].Drive, merged = d.Letter, true
			}
		}
		if !merged {
			out = append(out, Share{GuestPath: d.Guest, Drive: d.Letter})
		}
	}
	return out
}

// The Windows names of the Linux file system (WSL's Plan 9 redirector). lab's host cannot
// open them; -u accepts them (pure text) and relative paths are computed through them.
const (
	uncLocalhost = `\\wsl.localhost\`
	uncCompat    = `\\wsl$\`
	// virtualDistro names the guest in a virtual UNC path when $WSL_DISTRO_NAME is unset: it
	// holds a NUL, which no argument can, so no input ever matches it.
	virtualDistro = "\x00lab"
)

// translate follows WSL's WslPathTranslate (src/linux/init/wslpath.cpp): the path is made
// absolute from the cwd and canonicalised (".", "..", doubled separators; a trailing
// separator is kept; ".." above the root is EINVAL), translated, and, when it was relative
// and -a is not given, made relative again if it lies below the (translated) cwd.
func translate(shares []Share, mode PathMode, p string, abs bool, env PathEnv) (string, error) {
	if p == "" {
		return "", ErrInvalidPath
	}
	distro := env.Distro
	if distro == "" {
		distro = virtualDistro
	}
	switch mode {
	case ToHost, ToHostMixed:
		return toHost(shares, mode, p, abs, env, distro)
	case ToGuest:
		return toGuest(shares, p, abs, env, distro)
	}
	return "", fmt.Errorf("unknown translation %q", mode)
}

func toHost(shares []Share, mode PathMode, p string, abs bool, env PathEnv, distro string) (string, error) {
	if env.Realpath != nil {
		full := p
		if !path.IsAbs(full) {
			full = env.Cwd + "/" + p
		}
		real, err := env.Realpath(full)
		switch {
		case err == nil:
			if strings.HasSuffix(p, "/") && real != "/" {
				real += "/"
			}
			p = real // absolute: the result is absolute too, as in WSL
		case isNotExist(err):
		default:
			return "", err
		}
	}
	rel := !path.IsAbs(p)
	full := p
	if rel {
		full = env.Cwd + "/" + p
	}
	full, ok := collapse(full, '/')
	if !ok {
		return "", ErrInvalidPath
	}
	out, virtual := hostForm(shares, full, distro)
	if rel && !abs {
		cwdForm, _ := hostForm(shares, env.Cwd, distro)
		if r, stripped := stripCwd(out, cwdForm); stripped {
			if r == "" {
				return "", ErrInvalidPath // WSL prints nothing and fails here too
			}
			out, virtual = r, false
		}
	}
	if virtual {
		return "", ErrNotRepresentable
	}
	if mode == ToHostMixed {
		out = strings.ReplaceAll(out, `\`, "/")
	}
	return out, nil
}

// hostForm is the host's name for the absolute, canonical guest path p: a drive path
// (C:\x, NTFS-illegal characters escaped as DrvFs does), a host path (a share without a
// drive), or else the virtual \\wsl.localhost\DISTRO\... (virtual: the host cannot open it).
func hostForm(shares []Share, p, distro string) (string, bool) {
	best, rest := -1, ""
	for i, s := range shares {
		if r, ok := within(p, s.GuestPath); ok && (best < 0 || len(s.GuestPath) > len(shares[best].GuestPath)) {
			best, rest = i, r
		}
	}
	if best < 0 {
		return uncLocalhost + distro + EscapeNT(p), true
	}
	s := shares[best]
	if s.Drive == "" {
		return s.HostPath + rest, false
	}
	if rest == "" {
		return s.Drive + `\`, false
	}
	return s.Drive + EscapeNT(rest), false
}

// within reports whether p is dir or below it, and the rest of p after dir (starting
// with '/', or empty).
func within(p, dir string) (string, bool) {
	if dir == "/" {
		if p == "/" {
			return "", true
		}
		return p, strings.HasPrefix(p, "/")
	}
	if rest, ok := strings.CutPrefix(p, dir); ok && (rest == "" || rest[0] == '/') {
		return rest, true
	}
	return "", false
}

// stripCwd makes out relative to cwd as WSL does: only when out continues cwd with a
// separator ("." when nothing follows it) or ends there (an empty result).
func stripCwd(out, cwd string) (string, bool) {
	rest, ok := strings.CutPrefix(out, cwd)
	if !ok {
		return "", false
	}
	switch {
	case rest == "":
		return "", true
	case rest[0] == '/' || rest[0] == '\\':
		if len(rest) == 1 {
			return ".", true
		}
		return rest[1:], true
	}
	return "", false
}

func toGuest(shares []Share, p string, abs bool, env PathEnv, distro string) (string, error) {
	// lab's extension: a host path (the host is Linux) in a share without... or with a
	// drive becomes the guest path. WSL has no such paths; anything else follows WSL.
	if strings.HasPrefix(p, "/") {
		if c, ok := collapse(p, '/'); ok {
			if g, ok := hostPathToGuest(shares, c); ok {
				return g, nil
			}
		}
	}
	q := strings.ReplaceAll(p, "/", `\`)
	rel := false
	if !isAbsWindows(q) {
		rel = true
		full := env.Cwd
		if c, ok := collapse(full, '/'); ok {
			full = c
		}
		cwdForm, _ := hostForm(onlyDrives(shares), full, distro)
		if q[0] == '\\' { // relative to the root of the cwd's drive
			if len(cwdForm) < 2 || cwdForm[1] != ':' {
				return "", ErrInvalidPath
			}
			q = cwdForm[:2] + q
		} else {
			q = strings.TrimSuffix(cwdForm, `\`) + `\` + q
		}
	}
	if len(q) < 3 {
		return "", ErrInvalidPath
	}
	var canon string
	switch {
	case q[1] == ':' && q[2] == '\\':
		c, ok := collapse(q, '\\')
		if !ok {
			return "", ErrInvalidPath
		}
		canon = c
	case strings.HasPrefix(q, `\\?\`):
		c, ok := collapse(q[4:], '\\')
		if !ok {
			return "", ErrInvalidPath
		}
		canon = c
	case strings.HasPrefix(q, `\\`):
		c, ok := collapse(q[2:], '\\')
		if !ok {
			return "", ErrInvalidPath
		}
		canon = `\\` + c
	default:
		return "", ErrInvalidPath
	}
	out, err := windowsToGuest(shares, canon, distro)
	if err != nil {
		return "", err
	}
	if rel && !abs {
		if r, stripped := stripCwd(out, env.Cwd); stripped {
			if r == "" {
				return "", ErrInvalidPath
			}
			out = r
		}
	}
	return out, nil
}

// onlyDrives keeps the drive shares: relative -u paths are resolved against the cwd's
// Windows form, which is a drive path or \\wsl.localhost (never a Linux host path).
func onlyDrives(shares []Share) []Share {
	var out []Share
	for _, s := range shares {
		if s.Drive != "" {
			out = append(out, s)
		}
	}
	return out
}

// isAbsWindows: C:\... or \\... (after '/' became '\').
func isAbsWindows(q string) bool {
	return len(q) >= 3 && isLetter(q[0]) && q[1] == ':' && q[2] == '\\' || strings.HasPrefix(q, `\\`)
}

// windowsToGuest translates a canonical absolute Windows path: a mapped drive (text only,
// as DrvFs paths are: no unescaping) or \\wsl.localhost\DISTRO\... (unescaped).
func windowsToGuest(shares []Share, q, distro string) (string, error) {
	if len(q) >= 2 && isLetter(q[0]) && q[1] == ':' {
		drive := strings.ToUpper(q[:2])
		for _, s := range shares {
			if s.Drive == drive {
				return s.GuestPath + strings.ReplaceAll(q[2:], `\`, "/"), nil
			}
		}
		return "", ErrNotRepresentable // no such drive in this guest
	}
	for _, prefix := range []string{uncLocalhost, uncCompat} {
		pre := prefix + distro
		if len(q) < len(pre) || !strings.EqualFold(q[:len(pre)], pre) {
			continue
		}
		rest := q[len(pre):]
		if rest != "" && rest[0] != '\\' {
			continue // \\wsl.localhost\DISTRO-other is another distribution
		}
		if rest == "" {
			return "/", nil
		}
		return UnescapeNT(strings.ReplaceAll(rest, `\`, "/")), nil
	}
	return "", ErrInvalidPath
}

// hostPathToGuest maps an absolute canonical host path under a share's host side.
func hostPathToGuest(shares []Share, p string) (string, bool) {
	best, rest := -1, ""
	for i, s := range shares {
		if s.HostPath == "" {
			continue // a drive only
		}
		if r, ok := within(p, s.HostPath); ok && (best < 0 || len(s.HostPath) > len(shares[best].HostPath)) {
			best, rest = i, r
		}
	}
	if best < 0 {
		return "", false
	}
	g := shares[best].GuestPath
	if g == "/" && rest != "" {
		return rest, true
	}
	return g + rest, true
}

// collapse canonicalises p as WSL's CollapsePath does. Segments are read from the end:
// ".." removes the next segment to its left; an empty or "." segment is removed when no
// ".." is pending (a pending ".." consumes it instead); the part before the first separator
// (a drive, a UNC host, or "" for "/x") is never removed. A path whose last segment was
// removed keeps a trailing separator. ok is false when a ".." climbs above the first part.
func collapse(p string, sep byte) (string, bool) {
	parts := strings.Split(p, string(sep))
	head, segs := parts[0], parts[1:]
	kept := make([]bool, len(segs))
	pending := 0
	for i := len(segs) - 1; i >= 0; i-- {
		s := segs[i]
		if s == ".." {
			pending++
			continue
		}
		if pending == 0 && (s == "" || s == ".") {
			pending++
		}
		if pending > 0 {
			pending--
			continue
		}
		kept[i] = true
	}
	if pending > 0 {
		return "", false
	}
	var b strings.Builder
	b.WriteString(head)
	for i, s := range segs {
		if kept[i] {
			b.WriteByte(sep)
			b.WriteString(s)
		}
	}
	if len(segs) > 0 && !kept[len(segs)-1] {
		b.WriteByte(sep)
	}
	return b.String(), true
}

// ntIllegal reports whether an ASCII byte cannot appear in an NTFS file name (WSL's
// escape.cpp table: control characters but tab, " * : < > ? \ |; '/' is the separator).
func ntIllegal(c byte) bool {
	if c < 0x20 {
		return c != '\t'
	}
	return strings.IndexByte(`"*:<>?\|`, c) >= 0
}

// EscapeNT writes a guest path (with '/' separators) for NTFS as DrvFs does: '/' becomes
// '\' and each NTFS-illegal ASCII character c becomes the private-use character U+F000+c
// (so ':' is U+F03A and '\' is U+F05C).
func EscapeNT(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '/':
			b.WriteByte('\\')
		case ntIllegal(c):
			b.WriteRune(0xf000 + rune(c))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// UnescapeNT reverses EscapeNT's character mapping (separators excepted): U+F000+c becomes
// c for the characters EscapeNT escapes; other private-use characters stay.
func UnescapeNT(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); {
		r, n := utf8.DecodeRuneInString(p[i:])
		if r >= 0xf000 && r < 0xf080 && ntIllegal(byte(r-0xf000)) {
			b.WriteByte(byte(r - 0xf000))
		} else {
			b.WriteString(p[i : i+n])
		}
		i += n
	}
	return b.String()
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist)
}

// WslpathUsage is wslpath's usage text (WSL's MessageWslPathUsage), printed on stdout
// after "wslpath: Invalid argument" when no path or --help is given.
const WslpathUsage = `Usage:
    -a    force result to absolute path format
    -u    translate from a Windows path to a WSL path (default)
    -w    translate from a WSL path to a Windows path
    -m    translate from a WSL path to a Windows path, with '/' instead of '\'

EX: wslpath 'c:\users'
`

const labpathUsage = `Usage: labpath [-a] [-u|-w|-m] PATH
    -a    force result to absolute path format
    -u    translate from a host path to a guest path (default)
    -w    translate from a guest path to a host path
    -m    translate from a guest path to a host path, with '/' instead of '\'

Shares and drives come from the interop config (share = GUEST HOST [DRIVE],
drive = C: /mnt/c). As wslpath, this program prints wslpath's messages.
`

// PathTool is the path translator as one program name: wslpath (WSL's messages exactly)
// or labpath (lab's, which name the reason of a failure).
type PathTool struct {
	Name string                  // "wslpath" or "labpath" (the basename of argv[0])
	Env  PathEnv                 // cwd, distro, symlink resolution
	Load func() (*Config, error) // the configuration, read only when a path is translated
	Out  io.Writer
	Err  io.Writer
}

func (t PathTool) isWSL() bool { return t.Name == "wslpath" }

// LabpathMain is labpath: args without the program name. load returns the configuration.
func LabpathMain(args []string, cwd string, load func() (*Config, error), stdout, stderr io.Writer) int {
	return PathTool{Name: "labpath", Env: PathEnv{Cwd: cwd}, Load: load, Out: stdout, Err: stderr}.Main(args)
}

// Main runs the translator on args (without the program name) and returns the exit status.
//
// As wslpath (IsWSL), it answers as WSL's does: options -a -u -w -m (combinable, one mode
// at most), --help; no path or --help prints "wslpath: Invalid argument" on stderr and the
// usage on stdout, exit 1; a failed translation prints "wslpath: PATH: Invalid argument",
// exit 1. As labpath it also accepts -h (usage on stdout, exit 0) and "--", and names the
// reason of a failure ("Result not representable" for a valid path the host cannot name).
func (t PathTool) Main(args []string) int {
	mode, abs, modeSet := ToGuest, false, false
	var paths []string
	flags := true
	bad := func(arg string) int {
		if t.isWSL() {
			fmt.Fprintf(t.Err, "Invalid command line argument: %s\nPlease use '%s --help' to get a list of supported arguments.\n", arg, t.Name)
			return 1
		}
		fmt.Fprintf(t.Err, "%s: invalid option -- '%s'\n%s", t.Name, strings.TrimLeft(arg, "-"), labpathUsage)
		return 1
	}
	usage := func() int {
		if t.isWSL() {
			fmt.Fprintf(t.Err, "%s: %s\n", t.Name, ErrInvalidPath)
			io.WriteString(t.Out, WslpathUsage+"\n")
			return 1
		}
		io.WriteString(t.Err, labpathUsage)
		return 1
	}
	for _, a := range args {
		switch {
		case flags && a == "--" && !t.isWSL():
			flags = false
		case flags && a == "--help":
			return usage()
		case flags && len(a) > 1 && a[0] == '-':
			for _, c := range a[1:] {
				switch c {
				case 'a':
					abs = true
				case 'u', 'w', 'm':
					if modeSet && PathMode(c) != mode && t.isWSL() {
						return bad(a)
					}
					mode, modeSet = PathMode(c), true
				case 'h':
					if t.isWSL() {
						return bad(a)
					}
					io.WriteString(t.Out, labpathUsage)
					return 0
				default:
					if t.isWSL() {
						return bad(a)
					}
					return bad(string(c))
				}
			}
		default:
			if len(paths) == 1 && t.isWSL() {
				return bad(a)
			}
			paths = append(paths, a)
		}
	}
	if len(paths) != 1 {
		return usage()
	}
	c, err := t.Load()
	if err != nil {
		fmt.Fprintf(t.Err, "%s: %v\n", t.Name, err)
		return 1
	}
	out, err := c.TranslateEnv(mode, paths[0], abs, t.Env)
	if err != nil {
		fmt.Fprintf(t.Err, "%s: %s: %s\n", t.Name, paths[0], t.reason(err))
		return 1
	}
	fmt.Fprintln(t.Out, out)
	return 0
}

// reason is a failure's text: strerror's wording for a system error (realpath's), and
// for wslpath "Invalid argument" for everything else, as WSL prints.
func (t PathTool) reason(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		m := errno.Error()
		return strings.ToUpper(m[:1]) + m[1:] // strerror capitalises; Go's table does not
	}
	if t.isWSL() {
		return ErrInvalidPath.Error()
	}
	return err.Error()
}
