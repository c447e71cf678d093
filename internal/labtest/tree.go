// Package labtest holds helpers that several packages' tests share: the project's
// skip-or-fail rule for missing tools (Need, NeedVM, Have, SkipOrFail: a skip, or a failure
// under LAB_REQUIRE_VM=1 as make test sets), building test binaries (GoBuild), a buffer safe
// to read while a process writes it (SyncBuffer), a writer into the test log (Log), and a
// host process tree to kill and find (HostTree, Procs). It is imported by tests only.
package labtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// HostTree writes a host program that starts a daemon in a new session and a background
// child, then sleeps: the tree a relay's or hostagent's death must take down. Every process
// of the tree is a copy of sleep whose path holds the returned marker (see Procs); whatever
// is left of it is killed when the test ends.
func HostTree(t testing.TB) (marker, script string) {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	marker = fmt.Sprintf("lab-tree-%d", time.Now().UnixNano())
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, marker), b, 0o755); err != nil {
		t.Fatal(err)
	}
	script = filepath.Join(dir, "tree.sh")
	body := fmt.Sprintf("#!/bin/sh\nsetsid %[1]s 600 </dev/null >/dev/null 2>&1 &\n%[1]s 600 &\nexec %[1]s 600\n", filepath.Join(dir, marker))
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range Procs(marker, "") {
			syscall.Kill(p, syscall.SIGKILL)
		}
	})
	return marker, script
}

// Procs lists the live (not zombie) processes whose command line holds word and, unless
// env is "", whose environment holds the entry env.
func Procs(word, env string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !Alive(pid) {
			continue
		}
		cl, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if !bytes.Contains(cl, []byte(word)) {
			continue
		}
		if env != "" {
			en, _ := os.ReadFile("/proc/" + e.Name() + "/environ")
			if !slices.ContainsFunc(bytes.Split(en, []byte{0}), func(kv []byte) bool { return string(kv) == env }) {
				continue
			}
		}
		pids = append(pids, pid)
	}
	return pids
}

// Alive reports whether pid runs and is not a zombie.
func Alive(pid int) bool {
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(st, ')')
	return i > 0 && !bytes.HasPrefix(st[i+1:], []byte(" Z"))
}

// ProcsWithArg lists the live processes, other than this one, that have word as one whole
// argument (a test's marker), but those whose argv[0] is one of except.
func ProcsWithArg(word string, except ...string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !Alive(pid) {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		if slices.Contains(args, word) && !slices.Contains(except, args[0]) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// WaitNoProcs waits until procs lists no process, for 20 s at most; then it kills those
// left and fails tb, saying they are what. It waits on pidfds, looking again after they all
// exited (a process may have forked meanwhile).
func WaitNoProcs(tb testing.TB, what string, procs func() []int) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		pids := procs()
		if len(pids) == 0 {
			return
		}
		if !waitExits(pids, deadline) {
			for _, p := range pids {
				syscall.Kill(p, syscall.SIGKILL)
			}
			tb.Fatalf("processes %v (%s) still run 20 s later", pids, what)
		}
	}
}

// waitExits reports whether every process of pids exited (zombies included) by deadline.
func waitExits(pids []int, deadline time.Time) bool {
	var fds []unix.PollFd
	for _, p := range pids {
		fd, err := unix.PidfdOpen(p, 0)
		if err != nil {
			continue // gone already
		}
		defer unix.Close(fd)
		fds = append(fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	}
	for len(fds) > 0 {
		ms := time.Until(deadline).Milliseconds()
		if ms <= 0 {
			return false
		}
		n, err := unix.Poll(fds, int(ms))
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return false
		}
		running := fds[:0]
		for _, f := range fds {
			if f.Revents == 0 {
				running = append(running, f)
			}
		}
		fds = running
	}
	return true
}
