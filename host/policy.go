package host

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DeniedError is a request the policy refuses. Its message is sent to the guest.
type DeniedError struct {
	Path   string
	Reason string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("host: %s: %s", e.Path, e.Reason)
}

func denied(path, format string, args ...any) error {
	return &DeniedError{Path: path, Reason: fmt.Sprintf(format, args...)}
}

// NotFoundError is a program that does not exist on the host side of a share.
var errNotFound = errors.New("no such file on the host")

// checkGuestPath applies the lexical rules every guest path obeys: absolute, no NUL, and
// no ".." component (refused outright, even when it would stay inside the share: the
// interpreter sends clean absolute paths, so a ".." is a probe).
func checkGuestPath(p string) error {
	if p == "" {
		return denied(p, "empty path")
	}
	if strings.IndexByte(p, 0) >= 0 {
		return denied(p, "NUL byte in path")
	}
	if !strings.HasPrefix(p, "/") {
		return denied(p, "not an absolute guest path")
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return denied(p, "'..' is not allowed in paths")
		}
	}
	return nil
}

// within reports whether path is root or below it (both clean, absolute).
func within(path, root string) bool {
	if root == "/" {
		return strings.HasPrefix(path, "/")
	}
	return path == root || strings.HasPrefix(path, root+"/")
}

// shareFor returns the share with the longest guest path containing the clean guest path p,
// and the host path p maps to (lexically: no symlinks followed).
func (c *Config) shareFor(p string) (Share, string, bool) {
	best := -1
	for i, s := range c.Shares {
		if within(p, s.GuestPath) && (best < 0 || len(s.GuestPath) > len(c.Shares[best].GuestPath)) {
			best = i
		}
	}
	if best < 0 {
		return Share{}, "", false
	}
	s := c.Shares[best]
	rel := strings.TrimPrefix(strings.TrimPrefix(p, s.GuestPath), "/")
	return s, filepath.Join(s.HostPath, filepath.FromSlash(rel)), true
}

// insideShares reports whether the resolved host path is inside any share.
func (c *Config) insideShares(real string) bool {
	for _, s := range c.Shares {
		if within(real, s.HostPath) {
			return true
		}
	}
	return false
}

// resolveProgram maps a guest program path to the host file to run. The path must map into
// a share and resolve, after every symlink, to a regular file inside a share.
//
// The check runs before exec, so a guest that can write to a share could swap a path
// component for a symlink in between; that gains it nothing it does not already have (it can
// put any program in a writable share and run it), and read-only shares cannot be raced.
func (c *Config) resolveProgram(guestPath string) (string, error) {
	if err := checkGuestPath(guestPath); err != nil {
		return "", err
	}
	clean := filepath.Clean(guestPath)
	_, hostPath, ok := c.shareFor(clean)
	if !ok {
		return "", denied(guestPath, "not in a shared folder (run programs from a share, or expose host commands with --allow)")
	}
	real, err := filepath.EvalSymlinks(hostPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("host: %s: %w", guestPath, errNotFound)
		}
		return "", fmt.Errorf("host: %s: %w", guestPath, err)
	}
	if !c.insideShares(real) {
		return "", denied(guestPath, "resolves outside the shared folders")
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("host: %s: %w", guestPath, err)
	}
	if !fi.Mode().IsRegular() {
		return "", denied(guestPath, "not a regular file")
	}
	return real, nil
}

// resolveExposed maps an exposed command name to its host program.
func (c *Config) resolveExposed(name string) (string, error) {
	for _, e := range c.Allow {
		if e.Name == name {
			fi, err := os.Stat(e.HostPath)
			if err != nil {
				return "", fmt.Errorf("host: exposed command %s: %w", name, err)
			}
			if !fi.Mode().IsRegular() {
				return "", fmt.Errorf("host: exposed command %s: %s is not a regular file", name, e.HostPath)
			}
			return e.HostPath, nil
		}
	}
	return "", denied(name, "not an exposed host command (expose it with --allow NAME=HOSTPATH)")
}

// mapCwd maps the guest working directory to a host directory. A cwd outside every share
// (or one that does not resolve to a directory inside a share) falls back to
// Config.FallbackDir; warning is then the line the relay logs, and writes on the program's
// stderr only when the Launch asks for it (wire.LaunchCwdWarning: WSL writes nothing of
// its own on a program's stderr).
func (c *Config) mapCwd(guestCwd string) (dir, warning string) {
	fallback := func(why string) (string, string) {
		return c.FallbackDir, fmt.Sprintf("lab: warning: the working directory %s %s; the host program runs in %s", quoteIfNeeded(guestCwd), why, c.FallbackDir)
	}
	if guestCwd == "" {
		return c.FallbackDir, fmt.Sprintf("lab: warning: the guest did not send a working directory; the host program runs in %s", c.FallbackDir)
	}
	if checkGuestPath(guestCwd) != nil {
		return fallback("is not a plain absolute path")
	}
	_, hostPath, ok := c.shareFor(filepath.Clean(guestCwd))
	if !ok {
		return fallback("is not in a shared folder")
	}
	real, err := filepath.EvalSymlinks(hostPath)
	if err != nil || !c.insideShares(real) || !isDir(real) {
		return fallback("does not resolve to a shared directory on the host")
	}
	return real, ""
}

// guestToHostPath translates a guest path for LABENV's /p and /l flags: an absolute path in a
// share becomes its host path; anything else (relative paths, paths outside the shares) is
// returned unchanged.
func (c *Config) guestToHostPath(p string) string {
	if !strings.HasPrefix(p, "/") {
		return p
	}
	if _, hp, ok := c.shareFor(filepath.Clean(p)); ok {
		if strings.HasSuffix(p, "/") && !strings.HasSuffix(hp, "/") {
			hp += "/"
		}
		return hp
	}
	return p
}

func quoteIfNeeded(s string) string {
	if strings.ContainsAny(s, " \t\n\"'\\") {
		return fmt.Sprintf("%q", s)
	}
	return s
}
