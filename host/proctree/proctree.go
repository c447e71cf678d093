// Package proctree keeps every process a lab daemon starts for others (the relay's host
// programs, the hostagent's QEMU and Wine) inside one container per daemon process, so that
// the whole tree dies with the daemon however it ends, SIGKILL included, and leftovers of
// a daemon that died anyway are swept when the next one starts.
//
// Process groups and PR_SET_PDEATHSIG are not enough: a program's grandchild that calls
// setsid() (a daemon, Wine's wineserver) leaves the group, a setuid exec clears the death
// signal, and either is re-parented to PID 1 when the daemon dies.
//
// Two modes, chosen by Open:
//
//   - cgroup (preferred): a cgroup v2 directory lab-NAME.PID.START is made under the
//     daemon's own cgroup (found from /proc/self/cgroup and the cgroup2 mount in
//     /proc/self/mountinfo, never an assumed path). It works where the daemon's cgroup is
//     writable: as root, or for a user inside a delegated subtree (systemd-run --user
//     --scope -p Delegate=yes). Children are cloned straight into it (CLONE_INTO_CGROUP,
//     SysProcAttr.UseCgroupFD), so no fresh child is ever outside it; setsid, double forks
//     and setuid execs do not leave it (only a write to another cgroup's cgroup.procs that
//     its user may write would). Killing is one write to cgroup.kill (Linux 5.14).
//   - fallback (no writable cgroup v2, no cgroup.kill, or LAB_PROCTREE=fallback): every
//     started process gets the environment variable LAB_PROCTREE_OWNER=NAME.PID.START,
//     which its descendants inherit (setsid and double forks included); killing is a scan
//     of /proc/*/environ for that entry, repeated until a scan finds none (so children
//     forked meanwhile go too). Its limit, documented rather than hidden: a descendant that
//     execs with a cleared environment (env -i, sudo) or that this user may not inspect is
//     not found.
//
// In both modes Open starts one watcher per daemon (not per launch: launch latency is
// not paid for it): this binary re-executed with LAB_PROCTREE_WATCH set, reading a pipe
// whose only write end the daemon holds. The daemon's death, SIGKILL included, is EOF on
// that pipe, and the watcher kills the tree at once (cgroup.kill and rmdir, or the marker
// scan). Close does the same on a normal exit. Open also sweeps what dead daemons of the
// same name left (a relay's, by the next relay; a hostagent's, by the next hostagent):
// sibling cgroups lab-NAME.PID.START and processes marked NAME.PID.START whose daemon (PID
// with that start time) no longer runs.
package proctree

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"lab/internal/fsutil"
)

// Mode names.
const (
	ModeCgroup   = "cgroup"
	ModeFallback = "fallback"
)

const (
	// ModeEnv forces a mode: "cgroup" (Open fails when it cannot), "fallback", or "auto".
	ModeEnv = "LAB_PROCTREE"
	// OwnerEnv marks the processes of a fallback-mode tree: NAME.PID.START.
	OwnerEnv = "LAB_PROCTREE_OWNER"
	// watchEnv makes this binary the watcher (see init): MODE:ARG.
	watchEnv = "LAB_PROCTREE_WATCH"
)

// Options configure Open.
type Options struct {
	// Name is the daemon's kind, e.g. "relay" or "hostagent": lowercase letters, digits, '-'.
	Name string
	// Mode is "auto" (zero: $LAB_PROCTREE, else auto), "cgroup" or "fallback".
	Mode string
	// Logger receives the chosen mode and the sweep. Zero: slog.Default().
	Logger *slog.Logger
}

// Tree holds the processes started through Prepare. A nil *Tree holds nothing: its methods
// do nothing.
type Tree struct {
	mode string
	id   string // NAME.PID.START
	dir  string // cgroup directory (cgroup mode)
	cgfd int    // its descriptor, for CLONE_INTO_CGROUP
	log  *slog.Logger

	watchW  *os.File // the write end of the watcher's pipe
	watcher *exec.Cmd

	closeOnce sync.Once
	closeErr  error
}

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// Open makes the tree for this process, starts its watcher and sweeps leftovers of dead
// daemons. It fails only when a forced mode is unavailable or the watcher cannot start.
func Open(opts Options) (*Tree, error) {
	if !validName.MatchString(opts.Name) {
		return nil, fmt.Errorf("proctree: name %q: want lowercase letters, digits and '-'", opts.Name)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	mode := opts.Mode
	if mode == "" {
		mode = os.Getenv(ModeEnv)
	}
	if mode == "" {
		mode = "auto"
	}
	if mode != "auto" && mode != ModeCgroup && mode != ModeFallback {
		return nil, fmt.Errorf("proctree: mode %q (from %s or options): want auto, cgroup or fallback", mode, ModeEnv)
	}
	start, err := startTime(os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("proctree: %w", err)
	}
	t := &Tree{mode: ModeFallback, id: fmt.Sprintf("%s.%d.%d", opts.Name, os.Getpid(), start), cgfd: -1, log: log}

	parent, cgErr := ownCgroup()
	if cgErr == nil {
		sweepCgroups(parent, opts.Name, log)
	}
	sweepMarked(opts.Name, log)
	if mode != ModeFallback {
		if cgErr == nil {
			cgErr = t.makeCgroup(parent)
		}
		if cgErr != nil && mode == ModeCgroup {
			return nil, fmt.Errorf("proctree: no usable cgroup v2 (%s=%s): %w", ModeEnv, ModeCgroup, cgErr)
		}
		if cgErr != nil {
			log.Info("proctree: no writable cgroup v2; host process trees are tracked by an environment marker",
				"reason", cgErr, "marker", OwnerEnv+"="+t.id)
		}
	}
	if err := t.startWatcher(); err != nil {
		t.removeCgroup()
		return nil, err
	}
	log.Info("proctree: holding host processes", "mode", t.mode, "cgroup", t.dir, "id", t.id)
	return t, nil
}

// Mode is ModeCgroup or ModeFallback.
func (t *Tree) Mode() string {
	if t == nil {
		return ""
	}
	return t.mode
}

// Cgroup is the tree's cgroup directory, or "" in fallback mode.
func (t *Tree) Cgroup() string {
	if t == nil {
		return ""
	}
	return t.dir
}

// Prepare makes cmd start inside the tree; call it just before cmd.Start. In cgroup mode
// the child is cloned into the cgroup; in fallback mode it gets the marker variable (its
// cmd.Env, or this process's environment when nil, plus OwnerEnv).
func (t *Tree) Prepare(cmd *exec.Cmd) {
	if t == nil {
		return
	}
	if t.mode == ModeCgroup {
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = t.cgfd
		return
	}
	env := cmd.Environ()
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, OwnerEnv+"=") { // a nested daemon's own mark is replaced
			out = append(out, kv)
		}
	}
	cmd.Env = append(out, OwnerEnv+"="+t.id)
}

// Kill kills every process in the tree and waits (up to 5 s) until none is left.
func (t *Tree) Kill() error {
	if t == nil {
		return nil
	}
	if t.mode == ModeCgroup {
		return killCgroup(t.dir)
	}
	return killMarked(t.id)
}

// Close kills the tree, removes its cgroup and stops the watcher.
func (t *Tree) Close() error {
	if t == nil {
		return nil
	}
	t.closeOnce.Do(func() {
		t.closeErr = t.Kill()
		if err := t.removeCgroup(); err != nil && t.closeErr == nil {
			t.closeErr = err
		}
		t.watchW.Close() // the watcher finds nothing left and exits
	})
	return t.closeErr
}

func (t *Tree) removeCgroup() error {
	if t.dir == "" {
		return nil
	}
	if t.cgfd >= 0 {
		unix.Close(t.cgfd)
		t.cgfd = -1
	}
	if err := unix.Rmdir(t.dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("proctree: remove %s: %w", t.dir, err)
	}
	return nil
}

// ownCgroup returns this process's cgroup v2 directory.
func ownCgroup() (string, error) {
	mnt, root, err := cgroup2Mount()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	var rel string
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			rel, found = p, true
		}
	}
	if !found {
		return "", errors.New("this process has no cgroup v2 entry in /proc/self/cgroup")
	}
	rel = strings.TrimSuffix(rel, " (deleted)")
	r, err := filepath.Rel(root, rel)
	if err != nil || strings.HasPrefix(r, "..") {
		return "", fmt.Errorf("this process's cgroup %s is outside the cgroup2 mount at %s (root %s)", rel, mnt, root)
	}
	return filepath.Join(mnt, r), nil
}

// cgroup2Mount finds the cgroup2 mount in /proc/self/mountinfo: its mount point and the
// path of its root within the hierarchy.
func cgroup2Mount() (mnt, root string, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fs, pf := strings.Fields(post), strings.Fields(pre)
		if len(fs) < 1 || fs[0] != "cgroup2" || len(pf) < 5 {
			continue
		}
		return unescapeMount(pf[4]), unescapeMount(pf[3]), nil
	}
	return "", "", errors.New("no cgroup2 file system is mounted")
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// makeCgroup creates the tree's cgroup under parent and checks it can be used.
func (t *Tree) makeCgroup(parent string) error {
	// Moving a child from our cgroup into the new one needs write access to ours.
	if err := unix.Access(filepath.Join(parent, "cgroup.procs"), unix.W_OK); err != nil {
		return fmt.Errorf("%s is not writable by this user (run inside a delegated cgroup, e.g. systemd-run --user --scope -p Delegate=yes): %w", parent, err)
	}
	dir := filepath.Join(parent, "lab-"+t.id)
	if err := unix.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cgroup.kill")); err != nil {
		unix.Rmdir(dir)
		return fmt.Errorf("the kernel has no cgroup.kill (Linux 5.14): %w", err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Rmdir(dir)
		return fmt.Errorf("open %s: %w", dir, err)
	}
	t.mode, t.dir, t.cgfd = ModeCgroup, dir, fd
	return nil
}

// killCgroup kills every process in dir, waits until it is empty and removes it.
func killCgroup(dir string) error {
	if dir == "" {
		return nil
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("proctree: kill %s: %w", dir, err)
	}
	// cgroup.events reports "populated 0" as a change of the file (inotify), once the last
	// process is gone; watched before it is read, so that change is not missed.
	events := filepath.Join(dir, "cgroup.events")
	w, err := fsutil.WatchPath(events)
	if err != nil {
		return nil // the cgroup is gone already
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		b, err := os.ReadFile(events)
		if err != nil || bytes.Contains(b, []byte("populated 0")) {
			return nil
		}
		if err := w.Next(ctx); err != nil {
			return fmt.Errorf("proctree: %s still has processes 5s after cgroup.kill", dir)
		}
	}
}

// sweepCgroups kills and removes the cgroups lab-NAME.PID.START under parent whose daemon
// is gone.
func sweepCgroups(parent, name string, log *slog.Logger) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "lab-"+name+".")
		pid, start, ok2 := strings.Cut(rest, ".")
		if !e.IsDir() || !ok || !ok2 || alive(pid, start) {
			continue
		}
		dir := filepath.Join(parent, e.Name())
		err := killCgroup(dir)
		if err == nil {
			err = unix.Rmdir(dir)
		}
		log.Info("proctree: swept the cgroup of a daemon that is gone", "cgroup", dir, "err", err)
	}
}

// sweepMarked kills the processes marked by a daemon of this name that is gone.
func sweepMarked(name string, log *slog.Logger) {
	owners := map[string]bool{}
	scanMarked(func(pid int, owner string) {
		if _, ok := owners[owner]; !ok {
			parts := strings.Split(owner, ".")
			if len(parts) == 3 && parts[0] == name {
				owners[owner] = alive(parts[1], parts[2])
			}
		}
	})
	for owner, live := range owners {
		if !live {
			err := killMarked(owner)
			log.Info("proctree: swept the processes of a daemon that is gone", "owner", owner, "err", err)
		}
	}
}

// alive: process pid runs and started at start (clock ticks after boot).
func alive(pid, start string) bool {
	p, err := strconv.Atoi(pid)
	if err != nil {
		return false
	}
	s, err := startTime(p)
	return err == nil && strconv.FormatUint(s, 10) == start
}

// startTime is field 22 of /proc/PID/stat: with the pid, an identity that survives pid reuse.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// scanMarked calls fn for every process (other than this one) whose environment holds
// OwnerEnv, with its value.
func scanMarked(fn func(pid int, owner string)) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	self := os.Getpid()
	key := []byte(OwnerEnv + "=")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(b, key) {
			continue
		}
		for _, kv := range bytes.Split(b, []byte{0}) {
			if v, ok := bytes.CutPrefix(kv, key); ok {
				fn(pid, string(v))
			}
		}
	}
}

// killMarked SIGKILLs the processes marked with owner until a scan finds none.
func killMarked(owner string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := 0
		scanMarked(func(pid int, o string) {
			if o == owner {
				if syscall.Kill(pid, syscall.SIGKILL) == nil {
					n++
				}
			}
		})
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("proctree: processes marked %s=%s still appear 5s after SIGKILL", OwnerEnv, owner)
		}
		time.Sleep(5 * time.Millisecond) // zombies whose parent has not reaped them yet
	}
}

// startWatcher starts this binary again as the tree's watcher.
func (t *Tree) startWatcher() error {
	r, w, err := os.Pipe() // both ends close-on-exec: no host program inherits the write end
	if err != nil {
		return fmt.Errorf("proctree: %w", err)
	}
	arg := t.mode + ":" + t.id
	if t.mode == ModeCgroup {
		arg = t.mode + ":" + t.dir
	}
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{"lab-proctree-watch", t.id}
	cmd.Env = []string{watchEnv + "=" + arg}
	cmd.Stdin = r
	cmd.Dir = "/" // pins no mount
	// Its own group: a terminal's ^C for the daemon's group must not end the watcher first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return fmt.Errorf("proctree: start the watcher: %w", err)
	}
	t.watchW, t.watcher = w, cmd
	go func() {
		err := cmd.Wait()
		t.log.Debug("proctree: watcher exited", "err", err)
	}()
	return nil
}

func init() {
	if v, ok := os.LookupEnv(watchEnv); ok {
		os.Exit(watch(v))
	}
}

// watch is the watcher's main: wait for EOF on stdin (the daemon is gone, or closed the
// tree), or SIGTERM, then kill the tree.
func watch(arg string) int {
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGPIPE)
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	select {
	case <-done:
	case <-term:
	}
	mode, v, _ := strings.Cut(arg, ":")
	var err error
	switch mode {
	case ModeCgroup:
		if err = killCgroup(v); err == nil {
			if e := unix.Rmdir(v); e != nil && !errors.Is(e, unix.ENOENT) {
				err = e
			}
		}
	case ModeFallback:
		err = killMarked(v)
	default:
		err = fmt.Errorf("proctree: watcher: bad %s=%q", watchEnv, arg)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab: proctree watcher:", err)
		return 1
	}
	return 0
}
