package host

import (
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"lab/host/proctree"
)

// reaper starts the relay's children and, when the relay is the child subreaper, reaps the
// orphaned descendants the kernel hands to it. It reaps only children it did not start itself
// (those are reaped by their session), and it must be the only reaper in the process: enable it
// only in a process whose children are all the relay's (lab relay), never in one that also runs
// other programs (the VM's host agent runs QEMU).
type reaper struct {
	mu      sync.Mutex
	live    map[int]bool   // started by a session, reaped by it
	adopt   bool           // subreaper mode
	orphans int64          // orphans reaped (counter)
	procs   *proctree.Tree // where started children go (Config.Procs); nil: nowhere in particular
}

func newReaper() *reaper { return &reaper{live: map[int]bool{}} }

// start starts cmd; the lock keeps the reaper from taking a just-started child for an orphan.
func (r *reaper) start(cmd *exec.Cmd) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.procs.Prepare(cmd)
	unignoreSignals()
	if err := startUnblocked(cmd); err != nil {
		return err
	}
	r.live[cmd.Process.Pid] = true
	return nil
}

// done forgets a child its session has reaped.
func (r *reaper) done(pid int) {
	r.mu.Lock()
	delete(r.live, pid)
	r.mu.Unlock()
}

// becomeSubreaper makes this process the child subreaper and reaps adopted orphans until stop
// is closed.
func (r *reaper) becomeSubreaper(stop <-chan struct{}) error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return err
	}
	r.mu.Lock()
	r.adopt = true
	r.mu.Unlock()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	go func() {
		defer signal.Stop(sigs)
		tick := time.NewTicker(5 * time.Second) // a safety net: SIGCHLDs coalesce
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-sigs:
				// The kernel hands orphans to the subreaper's first live thread, the main
				// thread; the tick also looks at the others.
				r.reapOrphans(false)
				// At most one scan per 50 ms: a burst of launches is a burst of SIGCHLDs
				// (one stays pending in sigs and is handled next).
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
			case <-tick.C:
				r.reapOrphans(true)
			}
		}
	}()
	return nil
}

// reapOrphans reaps every exited child that no session owns: the main thread's children,
// or with allThreads every thread's.
func (r *reaper) reapOrphans(allThreads bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, pid := range children(allThreads) {
		if r.live[pid] {
			continue
		}
		var info unix.Siginfo
		// WNOHANG: a running orphan is left alone until it exits.
		if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG, nil); err == nil && info.Signo != 0 {
			r.orphans++
		}
	}
}

// children lists this process's children: those of the main thread, or of every thread.
func children(allThreads bool) []int {
	tasks := []string{"/proc/self/task/" + strconv.Itoa(os.Getpid()) + "/children"}
	if allThreads {
		tasks, _ = filepath.Glob("/proc/self/task/*/children")
	}
	var pids []int
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}
