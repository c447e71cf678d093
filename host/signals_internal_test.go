package host

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sigTestEnv selects the roles of this test binary in TestHostProgramsDefaultSignals.
const sigTestEnv = "LAB_TEST_SIGNALS"

// TestHostProgramsDefaultSignals starts the launch layer in a process started as nohup or a
// shell's background job would start it (SIGHUP, SIGINT, SIGQUIT, SIGPIPE, SIGTSTP ignored)
// and with SIGUSR1 and SIGALRM blocked, and asserts the host programs it starts, through
// pipes and through a pty, ignore and block nothing, as when started from a fresh shell.
func TestHostProgramsDefaultSignals(t *testing.T) {
	switch os.Getenv(sigTestEnv) {
	case "setup":
		sigSetupAndExec(t)
		return
	case "launch":
		sigLaunch(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHostProgramsDefaultSignals$", "-test.count=1", "-test.v", "-test.timeout=60s")
	cmd.Env = append(os.Environ(), sigTestEnv+"=setup")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("launcher process: %v\n%s", err, out)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.HasPrefix(k, "sig.") {
			got[strings.TrimPrefix(k, "sig.")] = v
		}
	}
	// The setup took: the launching process itself ignores SIGHUP and blocks SIGUSR1.
	bit := func(s syscall.Signal) uint64 { return 1 << (s - 1) }
	var selfIgn, selfBlk uint64
	fmt.Sscanf(got["self.SigIgn"], "%x", &selfIgn)
	fmt.Sscanf(got["self.SigBlk"], "%x", &selfBlk)
	if selfIgn&bit(syscall.SIGHUP) == 0 || selfBlk&bit(syscall.SIGUSR1) == 0 {
		t.Fatalf("the launching process does not ignore SIGHUP (SigIgn %s) and block SIGUSR1 (SigBlk %s): the test's setup failed\n%s",
			got["self.SigIgn"], got["self.SigBlk"], out)
	}
	// What Go cannot reset stays as the launcher had it (see unignoreSignals): SIGPROF and
	// the C library's signals 32-34 (make test's processes arrive with 32 ignored).
	keep := bit(syscall.SIGPROF) | bit(32) | bit(33) | bit(34)
	for _, mode := range []string{"pipe", "tty"} {
		for _, k := range []string{"SigIgn", "SigBlk"} {
			var v uint64
			if _, err := fmt.Sscanf(got[mode+"."+k], "%x", &v); err != nil {
				t.Errorf("host program started with %s: %s = %q: %v", mode, k, got[mode+"."+k], err)
				continue
			}
			if v&^keep != 0 {
				t.Errorf("host program started with %s: %s = %q, want none but SIGPROF and 32-34 (as from a fresh shell)", mode, k, got[mode+"."+k])
			}
		}
	}
	if t.Failed() {
		t.Logf("launcher output:\n%s", out)
	}
}

// sigSetupAndExec gives this process the dispositions and mask to pass on, then execs the
// test binary again as the launcher (execve keeps ignored signals and the calling thread's
// mask).
func sigSetupAndExec(t *testing.T) {
	runtime.LockOSThread()
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGPIPE, syscall.SIGTSTP)
	var set unix.Sigset_t
	for _, s := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGALRM} {
		set.Val[(s-1)/64] |= 1 << ((s - 1) % 64)
	}
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, nil); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, sigTestEnv+"=") {
			env = append(env, e)
		}
	}
	env = append(env, sigTestEnv+"=launch")
	err := syscall.Exec(os.Args[0], os.Args, env)
	t.Fatalf("exec: %v", err)
}

// sigLaunch starts cat /proc/self/status through pipes and through a pty, and prints the
// masks as sig.MODE.NAME=HEX lines.
func sigLaunch(t *testing.T) {
	for _, k := range []string{"SigIgn", "SigBlk"} {
		v, _ := statusMask(k)
		fmt.Printf("sig.self.%s=%016x\n", k, v)
	}
	r := newReaper()
	for _, mode := range []string{"pipe", "tty"} {
		var tty *WinSize
		if mode == "tty" {
			tty = &WinSize{Rows: 24, Cols: 80}
		}
		p, err := startProcess(exec.Command("cat", "/proc/self/status"), tty, time.Second, r)
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if tty == nil {
			p.stdin.Close()
		}
		status := collect(p.stdout).all()
		<-p.exited
		for _, k := range []string{"SigIgn", "SigBlk"} {
			v, ok := parseStatusMask([]byte(strings.ReplaceAll(status, "\r", "")), k)
			if !ok {
				t.Fatalf("%s: no %s in the program's output:\n%s", mode, k, status)
			}
			fmt.Printf("sig.%s.%s=%016x\n", mode, k, v)
		}
	}
}
