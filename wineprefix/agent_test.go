package wineprefix_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"lab/internal/fsutil"
	"lab/internal/labtest"
	"lab/wineprefix"
	"lab/wineprefix/winetest"
)

// agentPrefix is a prefix of the test's own for the agent's tests, with the context
// that bounds the test's Wine work; at cleanup its agent and server are stopped.
func agentPrefix(t *testing.T) (context.Context, *wineprefix.Prefix) {
	t.Helper()
	winetest.NeedWine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	p, err := wineprefix.Ensure(ctx, wineprefix.Options{Dir: filepath.Join(t.TempDir(), "windows")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.StopUnused(context.Background()); p.Shutdown(context.Background()) })
	return ctx, p
}

// TestUseSharesOneServer: two users of one prefix share one agent and one wineserver; the
// first one leaving (released, or killed) leaves the server to the other, and the last one
// leaving stops it.
func TestUseSharesOneServer(t *testing.T) {
	ctx, p := agentPrefix(t)
	servers := func() []int { return labtest.Procs("wineserver", "WINEPREFIX="+p.Dir) }

	first, err := p.Use(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := wineprefix.ReadAgentState(p.Dir)
	if err != nil || st.State != "warm" {
		t.Fatalf("after Use: agent state %+v, %v; want warm", st, err)
	}
	agent := st.PID
	// The agent waits for its last user in the kernel (a blocking flock on the users' file),
	// not on a timer.
	labtest.WaitInSyscall(t, agent, unix.SYS_FLOCK)
	if n := len(servers()); n != 1 {
		t.Fatalf("after Use: %d wineservers of the prefix, want 1", n)
	}
	// A second user, as another machine's hostagent: a process of its own holding the lease.
	// It says "held" once it holds it: the agent wakes the moment no lease is left.
	second := exec.Command("flock", "--shared", "--no-fork", filepath.Join(p.Dir, ".lab-users.lock"), "sh", "-c", "echo held; exec sleep 600")
	held, err := second.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { second.Process.Kill(); second.Wait() })
	if line, err := bufio.NewReader(held).ReadString('\n'); line != "held\n" {
		t.Fatalf("the second user: %q, %v", line, err)
	}
	third, err := p.Use(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := wineprefix.ReadAgentState(p.Dir); st == nil || st.PID != agent {
		t.Errorf("the second Use started another agent: %+v, want pid %d", st, agent)
	}
	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	if err := third.Release(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the agent would be seen going by now: it wakes when the lock is free
	if !wineprefix.AgentRunning(p.Dir) || len(servers()) != 1 {
		log, _ := os.ReadFile(filepath.Join(p.Dir, ".lab-agent.log"))
		t.Fatalf("with a user left: agent running %v, wineservers %v; want the agent and one server; agent log:\n%s", wineprefix.AgentRunning(p.Dir), servers(), log)
	}
	if out, _, code := run(t, p, p.DriveC(), "", "cmd.exe", "/c", "echo", "hi"); out != "hi\r\n" || code != 0 {
		t.Errorf("cmd.exe /c echo hi with a user left = %q, %d", out, code)
	}
	if err := p.StopUnused(ctx); !errors.Is(err, wineprefix.ErrInUse) {
		t.Errorf("StopUnused with a user = %v, want ErrInUse", err)
	}
	// The last user dies without releasing anything: the agent stops by itself.
	second.Process.Signal(syscall.SIGKILL)
	second.Wait()
	gone, err := fsutil.LockShared(ctx, filepath.Join(p.Dir, ".lab-agent.lock"))
	if err != nil {
		t.Fatalf("waiting for the agent to exit after its last user: %v", err)
	}
	gone.Unlock()
	if s := servers(); len(s) != 0 {
		t.Errorf("wineservers %v of the prefix remain after the agent exited", s)
	}
	if err := p.StopUnused(ctx); err != nil {
		t.Fatalf("StopUnused after the last user: %v", err)
	}
	if wineprefix.AgentRunning(p.Dir) {
		t.Error("the agent still runs after its last user")
	}
	if s := servers(); len(s) != 0 {
		t.Errorf("wineservers %v of the prefix remain after its last user", s)
	}
	if n := prefixProcesses(t, p.Dir); n != 0 {
		t.Errorf("%d Wine processes of the prefix remain after its last user", n)
	}
}

// TestUseAfterStop: a user arriving while the agent stops the server (it holds
// the users' file exclusively) waits, then starts the next agent; StopUnused called then
// waits for the stopping agent too instead of taking its lock for a user.
func TestUseAfterStop(t *testing.T) {
	ctx, p := agentPrefix(t)
	for i := range 2 {
		lease, err := p.Use(ctx)
		if err != nil {
			t.Fatalf("Use %d: %v", i, err)
		}
		st, err := wineprefix.ReadAgentState(p.Dir)
		if err != nil || st.State != "warm" || !labtest.Alive(st.PID) {
			t.Fatalf("Use %d: agent state %+v, %v; want a live warm agent", i, st, err)
		}
		if !wineprefix.InUse(p.Dir) {
			t.Errorf("Use %d: InUse false with a lease held", i)
		}
		lease.Release()
		// At once, with the agent stopping or about to: never ErrInUse (no user is left).
		if err := p.StopUnused(ctx); err != nil {
			t.Fatalf("StopUnused after the only lease of Use %d: %v", i, err)
		}
		if wineprefix.AgentRunning(p.Dir) || wineprefix.InUse(p.Dir) {
			t.Fatalf("after StopUnused: agent running %v, in use %v; want neither", wineprefix.AgentRunning(p.Dir), wineprefix.InUse(p.Dir))
		}
	}
}
