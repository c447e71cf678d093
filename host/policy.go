package host

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
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
// a share and resolve, after every symlink, to a regular file inside a share. It checks a
// path; openProgram opens what it checked, and the relay runs that.
func (c *Config) resolveProgram(guestPath string) (string, error) {
	if err := checkGuestPath(guestPath); err != nil {
		return "", err
	}
	if strings.HasSuffix(guestPath, "/") {
		// Clean would drop the slash and run the file; the kernel refuses `prog/` (ENOTDIR),
		// so binfmt_misc never sends one: it is a probe.
		return "", denied(guestPath, trailingSlashReason)
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
		if errors.Is(err, unix.EINVAL) {
			// readlink of what lstat had just seen as a symlink: the path is being changed.
			return "", denied(guestPath, changedReason)
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

// shareRootOf is the host root of the innermost share containing the resolved path real.
func (c *Config) shareRootOf(real string) (string, bool) {
	root, ok := "", false
	for _, s := range c.Shares {
		if within(real, s.HostPath) && len(s.HostPath) >= len(root) {
			root, ok = s.HostPath, true
		}
	}
	return root, ok
}

// openProgram checks a guest program path like resolveProgram and opens the file it checked
// (O_PATH), so that the relay runs exactly that file (through its descriptor) and not whatever
// the path names by the time of the exec: a guest that can write to a share could otherwise swap
// the file, or a directory on its path, for a symlink out of the shares between the check and
// the exec. The resolved path is opened beneath its share's root with no symlink allowed on the
// way (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS): anything swapped in after the check makes
// the open fail, and the file is refused. It returns the open file and its resolved host path.
func (c *Config) openProgram(guestPath string) (*os.File, string, error) {
	real, err := c.resolveProgram(guestPath)
	if err != nil {
		return nil, "", err
	}
	root, ok := c.shareRootOf(real)
	if !ok {
		return nil, "", denied(guestPath, "resolves outside the shared folders")
	}
	f, err := openBeneath(root, real)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, "", fmt.Errorf("host: %s: %w", guestPath, errNotFound)
		case errors.Is(err, errChanged):
			return nil, "", denied(guestPath, changedReason)
		}
		return nil, "", fmt.Errorf("host: %s: %w", guestPath, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("host: %s: %w", guestPath, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, "", denied(guestPath, "not a regular file")
	}
	return f, real, nil
}

// trailingSlashReason refuses a program path ending in '/'.
const trailingSlashReason = "a program path cannot end in '/' (that names a directory, not a file)"

// changedReason is the refusal of a path that changed while the relay checked it.
const changedReason = "changed while the relay checked it (a symlink appeared on its path); not run"

// errChanged is a path that no longer resolves the way it did when it was checked.
var errChanged = errors.New("changed while the relay checked it; not run")

// openBeneath opens real, a symlink-free path under root, as O_PATH without following any
// symlink and without leaving root. Kernels without openat2 (before 5.6) get a weaker check:
// open with O_NOFOLLOW (the last component only; a symlink is refused), then the path the kernel reports for the
// descriptor (/proc/self/fd/N) must still be real. That is still a check of the file opened,
// not of a path, and what is opened is what runs; it only lets a file be opened whose path was
// real at the moment of the open.
func openBeneath(root, real string) (*os.File, error) {
	rel, err := filepath.Rel(root, real)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, errChanged
	}
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(dir)
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for try := 0; ; try++ {
		fd, err := unix.Openat2(dir, rel, &how)
		switch {
		case err == nil:
			return os.NewFile(uintptr(fd), real), nil
		case err == unix.EAGAIN && try < 16:
			continue // a rename somewhere raced the lookup: the kernel asks to retry
		case err == unix.ENOSYS:
			return openChecked(real)
		case err == unix.ELOOP, err == unix.EXDEV, err == unix.EAGAIN:
			return nil, errChanged
		}
		return nil, &fs.PathError{Op: "open", Path: real, Err: err}
	}
}

// openChecked is openBeneath's fallback without openat2.
func openChecked(real string) (*os.File, error) {
	fd, err := unix.Open(real, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ELOOP {
			return nil, errChanged
		}
		return nil, &fs.PathError{Op: "open", Path: real, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT == unix.S_IFLNK {
		unix.Close(fd) // O_PATH|O_NOFOLLOW opens a symlink itself rather than failing
		return nil, errChanged
	}
	if got, err := os.Readlink(fdPath(fd)); err != nil || got != real {
		unix.Close(fd)
		return nil, errChanged
	}
	return os.NewFile(uintptr(fd), real), nil
}

// fdPath is the /proc path of one of this process's descriptors.
func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

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

// exposedArgv is the argv an exposed command runs with: argv[0] is always the exposed name,
// whatever the guest sent, because a multi-call binary (busybox, a git-style tool) picks what
// it does from argv[0]: exposing it as `ls` must not let argv[0] `sh` start a shell. The
// guest's other arguments are kept.
func exposedArgv(name string, guestArgv []string) []string {
	argv := make([]string, 0, max(len(guestArgv), 1))
	argv = append(argv, name)
	if len(guestArgv) > 1 {
		argv = append(argv, guestArgv[1:]...)
	}
	return argv
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
