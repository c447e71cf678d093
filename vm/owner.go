package vm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// EnvOwner names a process (its pid) whose exit ends the hostagent as ctx ending
// does: QEMU is stopped and the hostagent exits. The hostagent runs in a session of
// its own so that it outlives lab up, which also lets it outlive a test binary that
// go test killed on a timeout or a user killed with SIGKILL, with its QEMU. Tests
// set it (internal/labtest does, for every test binary) to the test process; the
// hostagent and every lab up a test runs inherit it. lab up never sets it.
const EnvOwner = "LAB_HOSTAGENT_OWNER"

// withOwner returns ctx, ended also when the process EnvOwner names exits (at once
// when it is gone already). The kernel says when through a pidfd, which works for a
// process that is not the hostagent's parent (Pdeathsig would not: lab up, the
// parent, exits after the boot). stop releases the watch.
func withOwner(ctx context.Context, log *slog.Logger) (_ context.Context, stop func()) {
	v := os.Getenv(EnvOwner)
	if v == "" {
		return ctx, func() {}
	}
	pid, err := strconv.Atoi(v)
	if err != nil || pid <= 0 {
		log.Warn("ignoring "+EnvOwner+": not a pid", "value", v)
		return ctx, func() {}
	}
	if pid == os.Getpid() {
		return ctx, func() {} // an in-process hostagent (tests): it ends with its owner anyway
	}
	ctx, cancel := context.WithCancelCause(ctx)
	exited, stopWatch, err := watchExit(pid)
	if err != nil {
		log.Warn("cannot watch the owner process "+EnvOwner+" names; the hostagent may outlive it", "pid", pid, "err", err)
		return ctx, func() { cancel(nil) }
	}
	go func() {
		if <-exited {
			log.Info("the owner process exited: stopping", "pid", pid)
			cancel(fmt.Errorf("vm: the process %d that %s names exited", pid, EnvOwner))
		}
	}()
	return ctx, func() { stopWatch(); cancel(nil) }
}

// watchExit reports on exited (true) when process pid exits, or at once when there
// is no such process; stop ends the watch (exited then gets false).
func watchExit(pid int) (exited <-chan bool, stop func(), err error) {
	ch := make(chan bool, 1)
	pidfd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		ch <- true
		return ch, func() {}, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	// poll(2) on the pidfd and a pipe: closing the pipe's write end wakes the poll,
	// which closing the pidfd would not.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		unix.Close(pidfd)
		return nil, nil, fmt.Errorf("pipe: %w", err)
	}
	go func() {
		defer unix.Close(pidfd)
		defer unix.Close(p[0])
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}, {Fd: int32(p[0]), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, -1)
			if err == unix.EINTR {
				continue
			}
			ch <- err == nil && fds[0].Revents != 0
			return
		}
	}()
	var once sync.Once
	return ch, func() { once.Do(func() { unix.Close(p[1]) }) }, nil
}
