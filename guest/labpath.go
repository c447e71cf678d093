package guest

import (
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// PathMode is a labpath translation, named after wslpath's options.
type PathMode byte

const (
	ToGuest     PathMode = 'u' // host path to guest path (the default)
	ToHost      PathMode = 'w' // guest path to host path (with a drive share: C:\x)
	ToHostMixed PathMode = 'm' // as ToHost, with '/' instead of '\'
)

// ErrNotRepresentable: no share covers the path (wslpath's wording).
var ErrNotRepresentable = errors.New("Result not representable")

// TranslatePath translates p between guest and host through shares. cwd
// (a guest path) makes relative paths absolute when abs is set; without
// abs a relative path stays relative (only its separators change).
func TranslatePath(shares []Share, mode PathMode, p, cwd string, abs bool) (string, error) {
	if p == "" {
		return "", errors.New("empty path")
	}
	switch mode {
	case ToHost, ToHostMixed:
		if !path.IsAbs(p) {
			if !abs {
				if mode == ToHost && hasDrive(shares) {
					return strings.ReplaceAll(p, "/", `\`), nil
				}
				return p, nil
			}
			p = path.Join(cwd, p)
		}
		return guestToHost(shares, mode, path.Clean(p))
	case ToGuest:
		q := p
		isDrive := len(q) >= 2 && q[1] == ':' && isLetter(q[0])
		if isDrive || strings.Contains(q, `\`) {
			q = strings.ReplaceAll(q, `\`, "/")
		}
		if !isDrive && !path.IsAbs(q) {
			if abs {
				return path.Join(cwd, q), nil
			}
			return q, nil
		}
		return hostToGuest(shares, q, isDrive)
	}
	return "", fmt.Errorf("unknown translation %q", mode)
}

// Translate is TranslatePath through the config's shares and drives.
func (c *Config) Translate(mode PathMode, p, cwd string, abs bool) (string, error) {
	return TranslatePath(c.pathShares(), mode, p, cwd, abs)
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
			if out[i].Guest == d.Guest {
				out[i].Drive, merged = d.Letter, true
			}
		}
		if !merged {
			out = append(out, Share{Guest: d.Guest, Drive: d.Letter})
		}
	}
	return out
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func hasDrive(shares []Share) bool {
	for _, s := range shares {
		if s.Drive != "" {
			return true
		}
	}
	return false
}

// within reports whether p is dir or below it, and the rest of p.
func within(p, dir string) (string, bool) {
	if p == dir {
		return "", true
	}
	if dir == "/" {
		return p[1:], true
	}
	if rest, ok := strings.CutPrefix(p, dir); ok && rest[0] == '/' {
		return rest[1:], true
	}
	return "", false
}

func guestToHost(shares []Share, mode PathMode, p string) (string, error) {
	best := -1
	var rest string
	for i, s := range shares {
		if r, ok := within(p, s.Guest); ok && (best < 0 || len(s.Guest) > len(shares[best].Guest)) {
			best, rest = i, r
		}
	}
	if best < 0 {
		return "", ErrNotRepresentable
	}
	s := shares[best]
	if s.Drive == "" {
		if rest == "" {
			return s.Host, nil
		}
		return path.Join(s.Host, rest), nil
	}
	sep := `\`
	if mode == ToHostMixed {
		sep = "/"
	}
	return s.Drive + sep + strings.ReplaceAll(rest, "/", sep), nil
}

func hostToGuest(shares []Share, p string, isDrive bool) (string, error) {
	if isDrive {
		drive := strings.ToUpper(p[:2])
		rest := strings.Trim(path.Clean("/"+p[2:]), "/")
		for _, s := range shares {
			if s.Drive == drive {
				return path.Join(s.Guest, rest), nil
			}
		}
		return "", ErrNotRepresentable
	}
	p = path.Clean(p)
	best := -1
	var rest string
	for i, s := range shares {
		if s.Host == "" {
			continue // a drive only
		}
		if r, ok := within(p, s.Host); ok && (best < 0 || len(s.Host) > len(shares[best].Host)) {
			best, rest = i, r
		}
	}
	if best < 0 {
		return "", ErrNotRepresentable
	}
	return path.Join(shares[best].Guest, rest), nil
}

const labpathUsage = `Usage: labpath [-a] [-u|-w|-m] PATH
    -a    force result to absolute path format
    -u    translate from a host path to a guest path (default)
    -w    translate from a guest path to a host path
    -m    translate from a guest path to a host path, with '/' instead of '\'

Shares and drives come from the interop config (share = GUEST HOST [DRIVE],
drive = C: /mnt/c).
`

// LabpathMain is labpath (like wslpath): args without the program name.
// load returns the configuration (only read when a path is translated).
func LabpathMain(args []string, cwd string, load func() (*Config, error), stdout, stderr io.Writer) int {
	mode, abs := ToGuest, false
	var paths []string
	flags := true
	for _, a := range args {
		if flags && a == "--" {
			flags = false
			continue
		}
		if flags && len(a) > 1 && a[0] == '-' {
			for _, c := range a[1:] {
				switch c {
				case 'a':
					abs = true
				case 'u', 'w', 'm':
					mode = PathMode(c)
				case 'h':
					io.WriteString(stdout, labpathUsage)
					return 0
				default:
					fmt.Fprintf(stderr, "labpath: invalid option -- '%c'\n%s", c, labpathUsage)
					return 1
				}
			}
			continue
		}
		paths = append(paths, a)
	}
	if len(paths) != 1 {
		io.WriteString(stderr, labpathUsage)
		return 1
	}
	c, err := load()
	if err != nil {
		fmt.Fprintf(stderr, "labpath: %v\n", err)
		return 1
	}
	out, err := c.Translate(mode, paths[0], cwd, abs)
	if err != nil {
		fmt.Fprintf(stderr, "labpath: %s: %v\n", paths[0], err)
		return 1
	}
	fmt.Fprintln(stdout, out)
	return 0
}
