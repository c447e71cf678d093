package proctree

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"lab/internal/labtest"
)

// The test binary plays every process of the tests, chosen by $PROCTREE_TEST_ROLE:
//
//	owner MODE MARKER    opens a Tree, starts "spawner" in it, prints
//	                     "ready WATCHERPID CGROUP" and waits to be killed
//	spawner MARKER       starts "daemon" in a new session, prints "ready", sleeps
//	daemon MARKER        starts "sleeper" in a new session and exits (a double fork)
//	sleeper MARKER       sleeps
//
// MARKER, unique per test, is in every process's argv, so the tests find the tree in
// /proc/*/cmdline whatever happened to the parents.
const roleEnv = "PROCTREE_TEST_ROLE"

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(play(role, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func self(role string, args ...string) *exec.Cmd {
	cmd := exec.Command("/proc/self/exe", args...)
	cmd.Env = append(os.Environ(), roleEnv+"="+role)
	cmd.Stderr = os.Stderr
	return cmd
}

func play(role string, args []string) int {
	switch role {
	case "owner":
		t, err := Open(Options{Name: "test", Mode: args[0], Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cmd := self("spawner", args[1])
		out, _ := cmd.StdoutPipe()
		t.Prepare(cmd)
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		line, _ := bufio.NewReader(out).ReadString('\n')
		if line != "ready\n" {
			fmt.Fprintf(os.Stderr, "spawner said %q\n", line)
			return 1
		}
		fmt.Printf("ready %d %s\n", t.watcher.Process.Pid, t.Cgroup())
		time.Sleep(time.Hour)
	case "spawner":
		cmd := self("daemon", args[0])
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Run(); err != nil { // returns once the sleeper runs
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("ready")
		time.Sleep(time.Hour)
	case "daemon":
		cmd := self("sleeper", args[0])
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	case "sleeper":
		time.Sleep(time.Hour)
	}
	return 0
}

// withMarker lists the processes whose argv holds marker, other than this one.
func withMarker(marker string) []int { return labtest.ProcsWithArg(marker) }

// waitNone waits until no process holds marker (bounded: 20 s).
func waitNone(t *testing.T, marker string) {
	t.Helper()
	labtest.WaitNoProcs(t, "the tree's, marker "+marker, func() []int { return withMarker(marker) })
}

// startOwner starts an owner process with its tree and returns it with its watcher's pid
// and cgroup.
func startOwner(t *testing.T, mode, marker string) (*exec.Cmd, int, string) {
	t.Helper()
	cmd := self("owner", mode, marker)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		for _, p := range withMarker(marker) {
			syscall.Kill(p, syscall.SIGKILL)
		}
	})
	line, _ := bufio.NewReader(out).ReadString('\n')
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "ready" {
		t.Fatalf("owner said %q", line)
	}
	watcher, _ := strconv.Atoi(f[1])
	cg := ""
	if len(f) > 2 {
		cg = f[2]
	}
	if got := withMarker(marker); len(got) != 3 { // owner, spawner, sleeper
		t.Fatalf("processes with the marker before the kill: %v, want 3 (owner, spawner, sleeper)", got)
	}
	return cmd, watcher, cg
}

// modes are the modes to test here: cgroup only where this user may make one.
func modes(t *testing.T) []string {
	if _, err := ownCgroup(); err == nil {
		tr, err := Open(Options{Name: "probe", Mode: ModeCgroup, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err == nil {
			tr.Close()
			return []string{ModeCgroup, ModeFallback}
		}
		t.Logf("cgroup mode not tested: %v", err)
	}
	return []string{ModeFallback}
}

// TestOwnerKilled: SIGKILL of the process that opened the tree kills the whole tree,
// a daemonised (setsid, double-forked) grandchild included, and removes the cgroup.
func TestOwnerKilled(t *testing.T) {
	for _, mode := range modes(t) {
		t.Run(mode, func(t *testing.T) {
			marker := fmt.Sprintf("proctree-test-killed-%s-%d", mode, time.Now().UnixNano())
			owner, _, cg := startOwner(t, mode, marker)
			if (cg != "") != (mode == ModeCgroup) {
				t.Fatalf("mode %s: cgroup %q", mode, cg)
			}
			owner.Process.Kill()
			owner.Wait()
			waitNone(t, marker)
			if cg != "" {
				deadline := time.Now().Add(10 * time.Second)
				for {
					if _, err := os.Stat(cg); os.IsNotExist(err) {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("cgroup %s is still there", cg)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
}

// TestSweep: when the owner and its watcher both died, the tree survives until the next
// Open, which sweeps it.
func TestSweep(t *testing.T) {
	for _, mode := range modes(t) {
		t.Run(mode, func(t *testing.T) {
			marker := fmt.Sprintf("proctree-test-sweep-%s-%d", mode, time.Now().UnixNano())
			owner, watcher, cg := startOwner(t, mode, marker)
			syscall.Kill(watcher, syscall.SIGKILL)
			owner.Process.Kill()
			owner.Wait()
			time.Sleep(200 * time.Millisecond)
			if got := withMarker(marker); len(got) != 2 {
				t.Fatalf("without a watcher, processes left: %v, want 2 (spawner, sleeper)", got)
			}
			tr, err := Open(Options{Name: "test", Mode: mode, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			if len(withMarker(marker)) != 0 {
				waitNone(t, marker) // reports them
			}
			if cg != "" {
				if _, err := os.Stat(cg); !os.IsNotExist(err) {
					t.Errorf("cgroup %s not removed by the sweep: %v", cg, err)
				}
			}
		})
	}
}

// TestClose: Close kills the tree at once (a normal exit of the daemon).
func TestClose(t *testing.T) {
	for _, mode := range modes(t) {
		t.Run(mode, func(t *testing.T) {
			tr, err := Open(Options{Name: "test", Mode: mode, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			if tr.Mode() != mode {
				t.Fatalf("Mode() = %q, want %q", tr.Mode(), mode)
			}
			marker := fmt.Sprintf("proctree-test-close-%s-%d", mode, time.Now().UnixNano())
			cmd := self("spawner", marker)
			out, _ := cmd.StdoutPipe()
			tr.Prepare(cmd)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go cmd.Wait()
			if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
				t.Fatalf("spawner said %q", line)
			}
			if err := tr.Close(); err != nil {
				t.Fatal(err)
			}
			if got := withMarker(marker); len(got) != 0 {
				t.Errorf("after Close: %v still run", got)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{Name: "Relay"}, `proctree: name "Relay": want lowercase letters, digits and '-'`},
		{Options{Name: "relay", Mode: "cgroups"}, `proctree: mode "cgroups" (from LAB_PROCTREE or options): want auto, cgroup or fallback`},
	} {
		if _, err := Open(tc.opts); err == nil || err.Error() != tc.want {
			t.Errorf("Open(%+v) = %v, want %q", tc.opts, err, tc.want)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{`/sys/fs/cgroup`: "/sys/fs/cgroup", `/a\040b`: "/a b", `/a\`: `/a\`, `/a\04`: `/a\04`} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

// BenchmarkStart: the cost Prepare adds to starting and reaping a trivial program.
func BenchmarkStart(b *testing.B) {
	truePath, err := exec.LookPath("true")
	if err != nil {
		b.Skip(err)
	}
	run := func(b *testing.B, tr *Tree) {
		for b.Loop() {
			cmd := exec.Command(truePath)
			tr.Prepare(cmd)
			if err := cmd.Run(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("none", func(b *testing.B) { run(b, nil) })
	for _, mode := range []string{ModeCgroup, ModeFallback} {
		b.Run(mode, func(b *testing.B) {
			tr, err := Open(Options{Name: "bench", Mode: mode, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Skip(err)
			}
			defer tr.Close()
			run(b, tr)
		})
	}
}

// TestKillWaitsForEmpty: Kill returns once the tree's processes are gone (in cgroup mode,
// told by cgroup.events' change, which Kill watches), and they are.
func TestKillWaitsForEmpty(t *testing.T) {
	for _, mode := range modes(t) {
		t.Run(mode, func(t *testing.T) {
			tr, err := Open(Options{Name: "killtest", Mode: mode, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			var cmds []*exec.Cmd
			for range 3 {
				cmd := exec.Command("sleep", "600")
				tr.Prepare(cmd)
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				cmds = append(cmds, cmd)
			}
			reaped := make(chan struct{})
			go func() { // the parent reaps, as a relay's sessions do
				for _, c := range cmds {
					c.Wait()
				}
				close(reaped)
			}()
			if err := tr.Kill(); err != nil {
				t.Fatalf("Kill: %v", err)
			}
			<-reaped
			for _, c := range cmds {
				if c.ProcessState == nil || c.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
					t.Errorf("pid %d: %v, want killed by SIGKILL", c.Process.Pid, c.ProcessState)
				}
			}
		})
	}
}
