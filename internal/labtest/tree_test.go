package labtest

import (
	"os/exec"
	"slices"
	"testing"
)

// TestProcsWithArg: a process is found by a whole argument, not by part of one, and not
// when its argv[0] is excepted; WaitNoProcs returns once it is gone.
func TestProcsWithArg(t *testing.T) {
	cmd := exec.Command("sleep", "601")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	defer func() { cmd.Process.Kill(); <-done }()
	go func() { cmd.Wait(); close(done) }()
	pid := cmd.Process.Pid
	if got := ProcsWithArg("601"); !slices.Contains(got, pid) {
		t.Errorf("ProcsWithArg(601) = %v, want %d among them", got, pid)
	}
	if got := ProcsWithArg("60"); slices.Contains(got, pid) {
		t.Errorf("ProcsWithArg(60) = %v: found by part of an argument", got)
	}
	if got := ProcsWithArg("601", "sleep"); slices.Contains(got, pid) {
		t.Errorf("ProcsWithArg(601, except sleep) = %v: argv[0] not excepted", got)
	}
	mine := func() []int {
		if Alive(pid) {
			return []int{pid}
		}
		return nil
	}
	cmd.Process.Kill()
	WaitNoProcs(t, "the sleep", mine)
	if Alive(pid) {
		t.Error("WaitNoProcs returned while the process runs")
	}
}
