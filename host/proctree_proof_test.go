package host_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"lab/internal/labtest"
)

// Proof: however `lab relay` ends, SIGKILL included, no process it started for the guest
// survives it: not the program, not a grandchild that setsid()s away from the program's
// process group (a daemon), not one that exec'd a setuid file (which clears
// PR_SET_PDEATHSIG). Both modes of package proctree: a cgroup (where this user may make
// one) and the environment-marker fallback (LAB_PROCTREE=fallback).

// treeMarker is a unique argv word for one test's host processes.
func treeMarker(t *testing.T) string {
	return fmt.Sprintf("lab-tree-%s-%d", strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()), time.Now().UnixNano())
}

// withArg lists the live (not zombie) host processes whose argv holds word (not the
// interpreters, whose argv holds the guest's).
func withArg(word string) []int { return labtest.ProcsWithArg(word, bin.interop) }

// waitNoArg waits (bounded, 20 s) until no live process has word in its argv.
func waitNoArg(t *testing.T, word string) {
	t.Helper()
	labtest.WaitNoProcs(t, "host processes with argv word "+word+", after the relay died", func() []int { return withArg(word) })
}

// setuidGrandchild makes a copy of the fixture named daemon-grandchild that is setuid to
// nobody (root only; "" otherwise).
func setuidGrandchild(t *testing.T, dir string) string {
	if os.Geteuid() != 0 {
		return ""
	}
	d := filepath.Join(dir, "suid")
	os.MkdirAll(d, 0o755)
	p := filepath.Join(d, "daemon-grandchild")
	b, err := os.ReadFile(bin.fixture)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o4755); err != nil {
		t.Fatal(err)
	}
	return p
}

// startDaemons launches the daemon fixture through the interpreter (with the setuid
// grandchild too when possible) and returns the interpreters once every tree runs.
func startDaemons(t *testing.T, w *world, marker string) []*exec.Cmd {
	t.Helper()
	args := [][]string{{marker}}
	if s := setuidGrandchild(t, w.root); s != "" {
		args = append(args, []string{marker, s})
	}
	var cmds []*exec.Cmd
	for _, a := range args {
		cmd := w.interop("daemon", "daemon", a...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var e labtest.SyncBuffer
		cmd.Stderr = &e
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
			t.Fatalf("daemon %v said %q (stderr %q)", a, line, e.String())
		}
		go io.Copy(io.Discard, out)
		cmds = append(cmds, cmd)
	}
	// Each tree: the program and its daemonised grandchild (the middle child exited).
	if got, want := len(withArg(marker)), 2*len(args); got != want {
		t.Fatalf("%d host processes with the marker before the kill, want %d", got, want)
	}
	t.Cleanup(func() {
		for _, p := range withArg(marker) {
			syscall.Kill(p, syscall.SIGKILL)
		}
	})
	return cmds
}

func killRelay(t *testing.T, w *world) {
	t.Helper()
	w.relay.Process.Kill()
	<-w.relayDone
	w.relay = nil
}

// TestProofRelayKilledTree: SIGKILL of lab relay kills every host process tree it runs.
func TestProofRelayKilledTree(t *testing.T) {
	for _, mode := range []string{"auto", "fallback"} {
		t.Run(mode, func(t *testing.T) {
			t.Setenv("LAB_PROCTREE", mode)
			w := newWorld(t)
			marker := treeMarker(t)
			cmds := startDaemons(t, w, marker)
			killRelay(t, w)
			waitNoArg(t, marker)
			for _, c := range cmds {
				if err := c.Wait(); err == nil {
					t.Errorf("the interpreter of a killed relay's session exited 0")
				}
			}
			if !strings.Contains(w.relayLog.String(), "proctree: holding host processes") {
				t.Errorf("relay log does not say how it holds its processes:\n%s", w.relayLog)
			}
		})
	}
}

// TestProofRelaySweep: when the relay and its watcher were both killed, the host
// processes they left are killed by the next relay's start.
func TestProofRelaySweep(t *testing.T) {
	for _, mode := range []string{"auto", "fallback"} {
		t.Run(mode, func(t *testing.T) {
			t.Setenv("LAB_PROCTREE", mode)
			w := newWorld(t)
			marker := treeMarker(t)
			startDaemons(t, w, marker)
			watchers := childrenNamed(w.relay.Process.Pid, "lab-proctree-watch")
			if len(watchers) != 1 {
				t.Fatalf("relay %d has watchers %v, want one", w.relay.Process.Pid, watchers)
			}
			syscall.Kill(watchers[0], syscall.SIGKILL)
			killRelay(t, w)
			time.Sleep(300 * time.Millisecond)
			if len(withArg(marker)) == 0 {
				t.Fatal("nothing left to sweep: the processes died with the relay and its watcher")
			}
			w.startRelay()
			waitNoArg(t, marker)
		})
	}
}

// childrenNamed lists the children of pid whose argv[0] is name.
func childrenNamed(pid int, name string) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			c, _ := os.ReadFile("/proc/" + s + "/cmdline")
			if a, _, _ := bytes.Cut(c, []byte{0}); string(a) == name {
				n, _ := strconv.Atoi(s)
				out = append(out, n)
			}
		}
	}
	return out
}
