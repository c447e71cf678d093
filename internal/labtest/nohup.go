package labtest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"lab/internal/sigdefault"
)

// nohupEnv carries the step of Nohup's child: "setup", then "run".
const nohupEnv = "LAB_TEST_NOHUP"

// Nohup runs the test t again (this test binary, -test.run its name) in a process started
// as nohup or a shell's background job would start one: SIGHUP, SIGINT, SIGQUIT, SIGPIPE
// and SIGTSTP ignored, SIGUSR1 and SIGALRM blocked. There InNohup is true, and the test
// does what it checks and prints its figures with NohupReport. Nohup returns them (the
// child's own masks as "self.SigIgn" and "self.SigBlk"), after failing t if the setup did
// not take.
func Nohup(t *testing.T) map[string]uint64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v", "-test.timeout=120s")
	cmd.Env = append(os.Environ(), nohupEnv+"=setup")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the nohup process: %v\n%s", err, out)
	}
	got := map[string]uint64{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok || !strings.HasPrefix(k, "nohup.") {
			continue
		}
		n, err := strconv.ParseUint(v, 16, 64)
		if err != nil {
			t.Fatalf("the nohup process printed %q: %v\n%s", sc.Text(), err, out)
		}
		got[strings.TrimPrefix(k, "nohup.")] = n
	}
	bit := func(s syscall.Signal) uint64 { return 1 << (s - 1) }
	if got["self.SigIgn"]&bit(syscall.SIGHUP) == 0 || got["self.SigBlk"]&bit(syscall.SIGUSR1) == 0 {
		t.Fatalf("the nohup process does not ignore SIGHUP (SigIgn %x) and block SIGUSR1 (SigBlk %x): the setup failed\n%s",
			got["self.SigIgn"], got["self.SigBlk"], out)
	}
	return got
}

// NohupSetup reports whether this process is the first step of Nohup's child, which execs
// the test binary again before any test runs: a TestMain makes nothing it would have to
// clean up (the exec skips the cleanup).
func NohupSetup() bool { return os.Getenv(nohupEnv) == "setup" }

// InNohup reports whether this process is Nohup's child, having reported its own masks.
// In the step before, it sets the signals up and execs the test binary again (execve keeps
// ignored signals and the calling thread's mask): it does not return.
func InNohup(t *testing.T) bool {
	switch os.Getenv(nohupEnv) {
	case "setup":
		runtime.LockOSThread()
		signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGPIPE, syscall.SIGTSTP)
		var set unix.Sigset_t
		for _, s := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGALRM} {
			set.Val[(s-1)/64] |= 1 << ((s - 1) % 64)
		}
		if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, nil); err != nil {
			t.Fatal(err)
		}
		env := []string{nohupEnv + "=run"}
		for _, e := range os.Environ() {
			if !strings.HasPrefix(e, nohupEnv+"=") {
				env = append(env, e)
			}
		}
		err := syscall.Exec(os.Args[0], os.Args, env)
		t.Fatalf("exec: %v", err)
	case "run":
		b, err := os.ReadFile("/proc/self/status")
		if err != nil {
			t.Fatal(err)
		}
		NohupReport(t, "self", string(b))
		return true
	}
	return false
}

// NohupReport prints, in Nohup's child, the SigIgn and SigBlk masks of a process's
// /proc/PID/status text as the figures name.SigIgn and name.SigBlk.
func NohupReport(t *testing.T, name, status string) {
	t.Helper()
	for _, k := range []string{"SigIgn", "SigBlk"} {
		var v string
		for _, l := range strings.Split(strings.ReplaceAll(status, "\r", ""), "\n") {
			if rest, ok := strings.CutPrefix(l, k+":"); ok {
				v = strings.TrimSpace(rest)
			}
		}
		if v == "" {
			t.Fatalf("%s: no %s in:\n%s", name, k, status)
		}
		fmt.Printf("nohup.%s.%s=%s\n", name, k, v)
	}
}

// NohupFresh fails t unless each of the processes who (figures of Nohup) ignored and
// blocked nothing, as when started from a fresh shell, but what Go cannot reset
// (sigdefault.Kept: SIGPROF and the C library's 32-34; make test's processes arrive
// with 32 ignored).
func NohupFresh(t *testing.T, got map[string]uint64, who ...string) {
	t.Helper()
	for _, w := range who {
		for _, k := range []string{"SigIgn", "SigBlk"} {
			if v, ok := got[w+"."+k]; !ok || v&^sigdefault.Kept != 0 {
				t.Errorf("%s started under nohup: %s = %x (reported: %v), want none but SIGPROF and 32-34 (as from a fresh shell)", w, k, v, ok)
			}
		}
	}
}
