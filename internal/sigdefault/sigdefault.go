// Package sigdefault starts child processes with every catchable signal at its default
// disposition and none blocked, as from a fresh shell, whatever this process inherited
// (nohup ignores SIGHUP; a background job of a non-interactive shell ignores SIGINT and
// SIGQUIT). Children inherit ignored signals and the forking thread's signal mask across
// exec, so without it a QEMU or host program started by a daemon under nohup would ignore
// SIGHUP too. Package host starts host programs with it; package vm, the hostagent and QEMU.
//
// Go's fork resets in the child only the signals the runtime has a handler for; it installs
// one for nearly all at start, but leaves SIGHUP and SIGINT alone when they were ignored then,
// and SIGTSTP, SIGTTIN, SIGTTOU, SIGCONT when they were not at their default. And the child
// gets the forking thread's signal mask, which is whatever this process was started with,
// minus the signals the runtime needs.
package sigdefault

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Kept are the signals (a mask as in /proc/PID/status) Unignore cannot reset: SIGPROF and
// the C library's 32-34 stay as this process had them.
const Kept = 1<<(syscall.SIGPROF-1) | 1<<31 | 1<<32 | 1<<33

// Start starts cmd as a fresh shell would: Unignore, then StartUnblocked.
func Start(cmd *exec.Cmd) error {
	Unignore()
	return StartUnblocked(cmd)
}

// unignoreOnce guards the process-wide change Unignore makes: signal dispositions belong to
// the process, and one handler per signal is enough for every start in it.
var unignoreOnce sync.Once

// Unignore has the runtime handle every signal still ignored in this process (read from
// /proc/self/status, the kernel's view), so that the fork resets it in children. The
// channel is never read and package signal never blocks on a full one: in this process the
// signal stays without effect, as when it was ignored. Not SIGTTIN and SIGTTOU: caught
// rather than ignored, they would make a background read or write of this process's
// terminal retry forever instead of failing or going through. SIGPROF and the C library's
// signals 32-34 cannot be handled by Go programs and stay as they were (asking for 32 under
// the race detector made children ignore it).
func Unignore() {
	unignoreOnce.Do(func() {
		ign, ok := Mask("SigIgn")
		if !ok {
			return
		}
		var sigs []os.Signal
		for n := 1; n <= 64; n++ {
			sig := syscall.Signal(n)
			if ign&(1<<(n-1)) == 0 || sig == syscall.SIGTTIN || sig == syscall.SIGTTOU || Kept&(1<<(n-1)) != 0 {
				continue
			}
			sigs = append(sigs, sig)
		}
		if len(sigs) > 0 {
			signal.Notify(make(chan os.Signal, 1), sigs...)
		}
	})
}

// StartUnblocked starts cmd from a thread that blocks no signal, so the child begins with
// an empty signal mask (it inherits the forking thread's). A signal pending for the process
// may then be delivered to this thread: the runtime's handlers take it on any thread. A
// caller that locked its goroutine to the thread (for Pdeathsig) stays locked.
func StartUnblocked(cmd *exec.Cmd) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var none, old unix.Sigset_t
	if err := unix.PthreadSigmask(unix.SIG_SETMASK, &none, &old); err != nil {
		return cmd.Start() // cannot happen for SIG_SETMASK; start as before
	}
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	return cmd.Start()
}

// Mask reads a signal mask line (SigIgn, SigBlk, ...) of /proc/self/status.
func Mask(name string) (uint64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	return ParseMask(b, name)
}

// ParseMask reads the signal mask line name (SigIgn, SigBlk, ...) of a /proc/PID/status.
func ParseMask(status []byte, name string) (uint64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		k, v, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok || string(k) != name {
			continue
		}
		m, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 16, 64)
		return m, err == nil
	}
	return 0, false
}
