package vm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"lab/images"
	"lab/internal/labtest"
)

// envKilledChild is set in TestIntegrationTestKilled's child, a run of this test
// binary that boots a VM (through the lab binary that envKilledLab names) in the
// state dir it names and is killed while it waits.
const (
	envKilledChild = "LAB_VM_TEST_KILLED_CHILD"
	envKilledLab   = "LAB_VM_TEST_KILLED_LAB"
)

// killedChild is the child's whole run (from TestMain): vm.Up, which this process
// never leaves alive.
func killedChild(dir string) int {
	img, err := images.Build(context.Background(), images.Options{})
	if err == nil {
		_, err = Up(context.Background(), Config{Name: "killed", StateDir: dir, Image: img, Accel: "tcg",
			Hostagent: []string{os.Getenv(envKilledLab), "hostagent"}, BootTimeout: 10 * time.Minute})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	select {} // booted before the parent's kill: wait for it
}

func TestOwnerEnv(t *testing.T) {
	if labtest.EnvHostagentOwner != EnvOwner {
		t.Fatalf("labtest.EnvHostagentOwner = %q, vm.EnvOwner = %q: tests would not own their hostagents", labtest.EnvHostagentOwner, EnvOwner)
	}
	if got := os.Getenv(EnvOwner); got != fmt.Sprint(os.Getpid()) {
		t.Fatalf("%s = %q in a test binary, want its pid %d (set by labtest)", EnvOwner, got, os.Getpid())
	}
}

// TestWatchExit: the watch reports a process's exit, a process already gone, and
// nothing once stopped.
func TestWatchExit(t *testing.T) {
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited, stop, err := watchExit(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	cmd.Process.Kill()
	if !<-exited {
		t.Error("the watch did not report the kill")
	}
	cmd.Wait()
	// Reaped: no such process any more.
	gone, stop2, err := watchExit(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	if !<-gone {
		t.Error("the watch of a process that is gone did not report it")
	}
	alive, stop3, err := watchExit(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	stop3()
	if <-alive {
		t.Error("a stopped watch of a live process reported an exit")
	}
}

// TestIntegrationTestKilled: a test binary killed with SIGKILL while its VM boots (as
// go test's -timeout ends one, or a user's kill -9) leaves no hostagent and no QEMU
// behind: the hostagent, in a session of its own so that it outlives lab up, stops
// when the process EnvOwner names (the test binary, set by labtest) exits.
func TestIntegrationTestKilled(t *testing.T) {
	bin := labBinary(t)
	if _, err := images.Build(context.Background(), images.Options{}); err != nil {
		t.Fatal(err) // built here, so that the child only boots
	}
	dir := filepath.Join(tmpRoot, "killed")
	child := exec.Command(os.Args[0], "-test.run=^$")
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, EnvOwner+"=") { // the child owns its VM, as a test binary of its own
			child.Env = append(child.Env, e)
		}
	}
	child.Env = append(child.Env, envKilledChild+"="+dir, envKilledLab+"="+bin)
	var out bytes.Buffer
	child.Stdout, child.Stderr = &out, &out
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	childDone := make(chan error, 1)
	go func() { childDone <- child.Wait() }()
	t.Cleanup(func() {
		child.Process.Kill()
		<-childDone
		Down(context.Background(), dir) // what a failure left running
		os.RemoveAll(dir)
	})
	// Until the child's hostagent started QEMU (the pid files say so).
	var agent, qemu int
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		agent, qemu = readPID(filepath.Join(dir, FileAgentPID)), readPID(filepath.Join(dir, FileQEMUPID))
		if processAlive(agent, dir) && processAlive(qemu, dir) {
			break
		}
		select {
		case err := <-childDone:
			childDone <- err
			t.Fatalf("the child exited before its QEMU started: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no hostagent and QEMU in %s after 2 minutes\n%s", dir, out.String())
		}
	}
	agentExit, stopA, err := watchExit(agent)
	if err != nil {
		t.Fatal(err)
	}
	defer stopA()
	qemuExit, stopQ, err := watchExit(qemu)
	if err != nil {
		t.Fatal(err)
	}
	defer stopQ()
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The hostagent stops QEMU (SIGTERM, SIGKILL after 5 s) and its Tasks (5 s at most).
	killed := time.Now()
	deadline := killed.Add(time.Minute)
	for _, w := range []struct {
		name string
		pid  int
		ch   <-chan bool
	}{{"hostagent", agent, agentExit}, {"QEMU", qemu, qemuExit}} {
		select {
		case <-w.ch:
		case <-time.After(time.Until(deadline)):
			t.Errorf("the %s (pid %d) still runs a minute after its test binary was killed", w.name, w.pid)
		}
	}
	t.Logf("the hostagent and QEMU were gone %v after the kill", time.Since(killed).Round(time.Millisecond))
}
