package host

import (
	"os/exec"
	"testing"
	"time"

	"lab/internal/labtest"
	"lab/internal/sigdefault"
)

// TestHostProgramsDefaultSignals starts the launch layer in a process started as nohup or a
// shell's background job would start it (SIGHUP, SIGINT, SIGQUIT, SIGPIPE, SIGTSTP ignored)
// and with SIGUSR1 and SIGALRM blocked (labtest.Nohup), and asserts the host programs it
// starts, through pipes and through a pty, ignore and block nothing, as when started from a
// fresh shell.
func TestHostProgramsDefaultSignals(t *testing.T) {
	if labtest.InNohup(t) {
		sigLaunch(t)
		return
	}
	got := labtest.Nohup(t)
	// What Go cannot reset stays as the launcher had it (sigdefault.Kept): SIGPROF and the C
	// library's signals 32-34 (make test's processes arrive with 32 ignored).
	for _, mode := range []string{"pipe", "tty"} {
		for _, k := range []string{"SigIgn", "SigBlk"} {
			if v, ok := got[mode+"."+k]; !ok || v&^sigdefault.Kept != 0 {
				t.Errorf("host program started with %s: %s = %x (reported: %v), want none but SIGPROF and 32-34 (as from a fresh shell)", mode, k, v, ok)
			}
		}
	}
}

// sigLaunch starts cat /proc/self/status through pipes and through a pty, and reports the
// masks as the figures MODE.NAME.
func sigLaunch(t *testing.T) {
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
		labtest.NohupReport(t, mode, status)
	}
}
