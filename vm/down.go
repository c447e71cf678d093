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

	"lab/vm/qmp"
)

// Grace periods of Down.
const (
	powerdownGrace = 15 * time.Second // guest shutdown after the ACPI power button
	quitGrace      = 5 * time.Second  // QEMU exit after QMP quit
)

// Down stops the VM with this name (or state directory) and removes its state:
// QMP system_powerdown, then QMP quit, then SIGKILL, each after a grace period (cut
// short when ctx ends). It also cleans up after a QEMU or hostagent that died.
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
		stopQEMUGracefully(ctx, dir, qemuPID)
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

func stopQEMUGracefully(ctx context.Context, dir string, pid int) {
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	c, err := qmp.Dial(qctx, filepath.Join(dir, FileQMPSock))
	cancel()
	if err == nil {
		defer c.Close()
		if c.SystemPowerdown(ctx) == nil && waitGone(ctx, pid, dir, powerdownGrace) {
			return
		}
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		c.Quit(qctx)
		cancel()
		if waitGone(context.WithoutCancel(ctx), pid, dir, quitGrace) {
			return
		}
	}
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(context.WithoutCancel(ctx), pid, dir, 5*time.Second)
}

// waitGone waits until pid (ours, see processAlive) is gone; false on timeout or ctx end.
func waitGone(ctx context.Context, pid int, marker string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for processAlive(pid, marker) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
