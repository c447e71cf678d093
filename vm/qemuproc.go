package vm

import (
	"errors"
	"fmt"
	"lab/internal/shell"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"lab/host/proctree"
	"lab/internal/sigdefault"
)

// QEMUExit is written to qemu.exit when QEMU ends.
type QEMUExit struct {
	Time    time.Time `json:"time"`
	Error   string    `json:"error,omitempty"` // "" for a clean exit
	Console string    `json:"console,omitempty"`
}

// qemuProc is the VM's QEMU process, a child of the hostagent.
type qemuProc struct {
	pid     int
	started time.Time
	done    chan struct{} // closed once QEMU exited and qemu.exit is written
	err     error         // Wait's verdict, set before done closes
}

// startQEMU starts QEMU (argv from the instance record) as a child that dies with this
// process: Pdeathsig fires when the thread that started it exits, so that goroutine
// stays locked to its thread and lives until QEMU is gone. It creates qmp.sock and
// hands QEMU the listening socket (see listenQMP).
func startQEMU(in *Instance, procs *proctree.Tree, log *slog.Logger) (*qemuProc, error) {
	dir := in.StateDir
	logf, err := os.OpenFile(filepath.Join(dir, FileQEMULog), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	// The console log starts empty before QEMU starts (QEMU truncates it too, later):
	// waitReady watches it for the guest's word that sshd listens, and a previous
	// boot's text must not count.
	if err := os.WriteFile(filepath.Join(dir, FileConsoleLog), nil, 0o644); err != nil {
		logf.Close()
		return nil, fmt.Errorf("vm: %w", err)
	}
	qmpf, err := listenQMP(dir)
	if err != nil {
		logf.Close()
		return nil, err
	}
	q := &qemuProc{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer logf.Close()
		argv := in.Argv
		log.Info("starting QEMU", "cmd", shell.Join(argv))
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
		cmd.ExtraFiles = []*os.File{qmpf} // fd qmpFD
		procs.Prepare(cmd)
		// Signals at their defaults, whatever the hostagent inherited (nohup, a background job).
		err := sigdefault.Start(cmd)
		qmpf.Close() // QEMU's is the only copy now
		if err != nil {
			started <- fmt.Errorf("vm: starting QEMU: %w", err)
			return
		}
		q.pid = cmd.Process.Pid
		q.started = time.Now()
		os.WriteFile(filepath.Join(dir, FileQEMUPID), []byte(strconv.Itoa(q.pid)+"\n"), 0o600)
		started <- nil
		q.err = cmd.Wait()
		x := QEMUExit{Time: time.Now()}
		if q.err != nil {
			x.Error = q.err.Error()
			if t := tail(filepath.Join(dir, FileQEMULog), 5); t != "" {
				x.Error += ": " + t
			}
		}
		x.Console = tail(filepath.Join(dir, FileConsoleLog), 20)
		writeJSON(filepath.Join(dir, FileQEMUExit), x)
		close(q.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return q, nil
}

// stop ends QEMU: SIGTERM (QEMU exits cleanly on it), then SIGKILL (which also ends a
// stopped QEMU and with it any QMP call waiting on it).
func (q *qemuProc) stop() {
	select {
	case <-q.done:
		return
	default:
	}
	syscall.Kill(q.pid, syscall.SIGTERM)
	select {
	case <-q.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(q.pid, syscall.SIGKILL)
		<-q.done
	}
}

func qemuExitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// bootError adds the last lines of QEMU's stderr and of the console to msg.
func (a *agent) bootError(msg string) error {
	dir := a.in.StateDir
	if q := tail(filepath.Join(dir, FileQEMULog), 5); q != "" {
		msg += "\nQEMU said:\n" + indent(q)
	}
	// Inline, not as a path: a failed Up removes the state dir.
	if c := tail(filepath.Join(dir, FileConsoleLog), 15); c != "" {
		msg += "\nlast lines of the guest console:\n" + indent(c)
	} else {
		msg += "\nthe guest printed nothing on its console"
	}
	return errors.New("vm: " + msg)
}

func indent(s string) string {
	out := "  "
	for _, r := range s {
		out += string(r)
		if r == '\n' {
			out += "  "
		}
	}
	return out
}
