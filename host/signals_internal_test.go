package host

import (
	"os/exec"
	"testing"
	"time"

	"lab/internal/labtest"
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
	labtest.NohupFresh(t, labtest.Nohup(t), "host program through pipe", "host program through tty")
}

// sigLaunch starts cat /proc/self/status through pipes and through a pty, and reports the
// masks as the figures "host program through MODE".
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
		labtest.NohupReport(t, "host program through "+mode, status)
	}
}
