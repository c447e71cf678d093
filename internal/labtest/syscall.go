package labtest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// WaitInSyscall waits until one of pid's threads is blocked in the system call nr (e.g.
// unix.SYS_FLOCK), as /proc/PID/task/*/syscall shows, and fails the test when none is after
// a minute. It tells a wait the kernel ends on an event (a blocking flock, read, ...) from
// one that polls: a polling waiter sleeps on a timer between non-blocking tries, so no
// thread of it is ever found inside the call. It skips when /proc does not show the calls
// (ptrace restrictions of a non-root user).
func WaitInSyscall(tb testing.TB, pid int, nr uintptr) {
	tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		found, err := InSyscall(pid, nr)
		if err != nil {
			tb.Skipf("cannot see the system calls of pid %d: %v", pid, err)
		}
		if found {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no thread of pid %d blocked in system call %d after a minute: it does not wait in the kernel", pid, nr)
		}
		time.Sleep(10 * time.Millisecond) // observing another process: nothing to wait on
	}
}

// InSyscall reports whether one of pid's threads is now blocked in system call nr.
func InSyscall(pid int, nr uintptr) (bool, error) {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "task")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	want := strconv.FormatUint(uint64(nr), 10) + " "
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "syscall"))
		if err != nil {
			if os.IsPermission(err) {
				return false, err
			}
			continue // the thread exited
		}
		if strings.HasPrefix(string(b), want) {
			return true, nil
		}
	}
	return false, nil
}
