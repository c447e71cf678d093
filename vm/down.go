package vm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Grace periods of Down.
const (
	powerdownGrace = 15 * time.Second // guest shutdown after the ACPI power button
	quitGrace      = 5 * time.Second  // QEMU exit after QMP quit or SIGTERM
	agentDialLimit = 3 * time.Second  // reaching the hostagent
)

// Down stops the VM with this name (or state directory) and removes its state. With
// the hostagent running it asks it (it holds the VM's one QMP connection) for QMP
// system_powerdown, then quit; without it, SIGTERM; then SIGKILL. Each step has a
// grace period (cut short when ctx ends); a QEMU that does not answer QMP (stopped,
// wedged) is killed at once. It also cleans up after a QEMU or hostagent that died.
func Down(ctx context.Context, nameOrDir string) error {
	dir, err := StateDirOf(nameOrDir)
	if err != nil {
		return err
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %q", ErrNotFound, nameOrDir)
	}
	if !isStateDir(dir) {
		return fmt.Errorf("vm: %s is not a lab state directory; not touching it", dir)
	}
	qemuPID := readPID(filepath.Join(dir, FileQEMUPID))
	if processAlive(qemuPID, dir) {
		stopQEMU(ctx, dir, qemuPID)
	}
	agentPID := readPID(filepath.Join(dir, FileAgentPID))
	// The hostagent exits by itself once QEMU is gone.
	waitGone(ctx, agentPID, dir, 5*time.Second)
	stopPID(agentPID, dir, 3*time.Second)
	if processAlive(qemuPID, dir) || processAlive(agentPID, dir) {
		return fmt.Errorf("vm: could not stop %s (pids %d, %d); state kept in %s", nameOrDir, qemuPID, agentPID, dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("vm: removing %s: %w", dir, err)
	}
	return nil
}

// stopQEMU is Down's ladder for QEMU (pid): through the hostagent's QMP when it
// answers, else a signal; SIGKILL last.
func stopQEMU(ctx context.Context, dir string, pid int) {
	nctx := context.WithoutCancel(ctx) // the last steps run even when ctx ended
	err := stopThroughAgent(ctx, dir, pid)
	if err == nil {
		return
	}
	if !errors.Is(err, ErrQEMUNotResponding) && !errors.Is(err, errStillRunning) {
		// No hostagent to ask: QEMU exits cleanly on SIGTERM.
		syscall.Kill(pid, syscall.SIGTERM)
		if waitGone(ctx, pid, dir, quitGrace) {
			return
		}
	}
	syscall.Kill(pid, syscall.SIGKILL) // also ends a stopped QEMU
	waitGone(nctx, pid, dir, 5*time.Second)
}

// errStillRunning: QEMU did not exit within the grace periods of the QMP ladder.
var errStillRunning = errors.New("QEMU still runs")

// stopThroughAgent asks the hostagent for system_powerdown, then quit, waiting for QEMU
// to exit after each. An error wrapping ErrQEMUNotResponding means QEMU did not answer.
func stopThroughAgent(ctx context.Context, dir string, pid int) error {
	if !agentAlive(dir) {
		return errors.New("no hostagent")
	}
	dctx, cancel := context.WithTimeout(ctx, agentDialLimit)
	c, err := Connect(dctx, dir)
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Call(ctx, RequestPowerdown, nil, nil); err != nil {
		if errors.Is(err, ErrQEMUNotResponding) {
			return err
		}
	} else if waitGone(ctx, pid, dir, powerdownGrace) {
		return nil
	}
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), qmpCallTimeout+time.Second)
	err = c.Call(qctx, RequestQuit, nil, nil)
	cancel()
	if err != nil && errors.Is(err, ErrQEMUNotResponding) {
		return err
	}
	if waitGone(context.WithoutCancel(ctx), pid, dir, quitGrace) {
		return nil
	}
	return errStillRunning
}

// waitGone waits until pid (ours, see processAlive) is gone; false on timeout or ctx end.
// It waits on a pidfd (readable when the process exits; it need not be our child).
func waitGone(ctx context.Context, pid int, marker string, d time.Duration) bool {
	if !processAlive(pid, marker) {
		return true
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return !processAlive(pid, marker) // ESRCH: gone meanwhile
	}
	defer unix.Close(fd)
	if !processAlive(pid, marker) { // the pid was reused between the check and the open
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	// poll(2) takes no ctx: a pipe that ctx's end makes readable wakes it.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return false
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	stop := context.AfterFunc(ctx, func() { unix.Write(p[1], []byte{0}) })
	defer stop()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(p[0]), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return !processAlive(pid, marker)
		}
		if fds[0].Revents != 0 {
			return true
		}
		return !processAlive(pid, marker) // ctx ended (the process may have just gone too)
	}
}
