package host

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"lab/trace"
)

// WinSize is a terminal size in character cells.
type WinSize struct {
	Rows, Cols uint16
}

// ExitStatus is how a host program ended.
type ExitStatus struct {
	Code   int            // exit code when Signal is 0
	Signal syscall.Signal // the signal that killed it, or 0
	Core   bool           // it dumped core
}

// ShellCode is the status a shell reports for it: the code, or 128+N when killed by signal N.
func (s ExitStatus) ShellCode() int {
	if s.Signal != 0 {
		return 128 + int(s.Signal)
	}
	return s.Code
}

func (s ExitStatus) String() string {
	if s.Signal != 0 {
		return fmt.Sprintf("killed by signal %d (%v)", int(s.Signal), s.Signal)
	}
	return fmt.Sprintf("exit status %d", s.Code)
}

// process is one running host program in its own process group (pipes) or its own
// session on a pty. The group leader is not reaped until reap: its zombie keeps the
// process-group ID reserved, so signalling the group can never hit an unrelated group
// that reused the number.
type process struct {
	cmd    *exec.Cmd
	pid    int
	ptmx   *os.File // tty mode only
	stdin  *os.File // pipe write end, or ptmx
	stdout *os.File // pipe read end, or ptmx
	stderr *os.File // pipe read end; nil in tty mode
	drain  time.Duration
	r      *reaper

	exited   chan struct{} // closed when the leader has exited (not yet reaped)
	exitMono int64         // trace.Mono() when the leader's exit was seen; set before exited closes
	cut      atomic.Bool   // an output ended at the drain deadline, not at its EOF

	mu     sync.Mutex
	reaped bool
	status ExitStatus
}

// startProcess starts cmd in a new process group (or, with a terminal, a new session with
// the pty as its controlling terminal). cmd's stdio and SysProcAttr are set here.
func startProcess(cmd *exec.Cmd, tty *WinSize, drain time.Duration, r *reaper) (*process, error) {
	p := &process{cmd: cmd, drain: drain, r: r, exited: make(chan struct{})}
	var childFiles []*os.File // the child's ends, closed in the parent after start
	closeAll := func(fs ...*os.File) {
		for _, f := range fs {
			if f != nil {
				f.Close()
			}
		}
	}
	if tty != nil {
		ptmx, pts, err := openPTY()
		if err != nil {
			return nil, err
		}
		if tty.Rows > 0 && tty.Cols > 0 {
			if err := setsize(ptmx, *tty); err != nil {
				closeAll(ptmx, pts)
				return nil, fmt.Errorf("host: set pty size: %w", err)
			}
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		p.ptmx, p.stdin, p.stdout = ptmx, ptmx, ptmx
		childFiles = []*os.File{pts}
	} else {
		inR, inW, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("host: %w", err)
		}
		outR, outW, err := os.Pipe()
		if err != nil {
			closeAll(inR, inW)
			return nil, fmt.Errorf("host: %w", err)
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			closeAll(inR, inW, outR, outW)
			return nil, fmt.Errorf("host: %w", err)
		}
		// Larger pipes: fewer wake-ups between the program and the relay on bulk output.
		for _, f := range []*os.File{inW, outW, errW} {
			growPipe(f)
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		p.stdin, p.stdout, p.stderr = inW, outR, errR
		childFiles = []*os.File{inR, outW, errW}
	}
	err := r.start(cmd)
	closeAll(childFiles...)
	if err != nil {
		closeAll(p.ptmx, p.stdin, p.stdout, p.stderr)
		return nil, err
	}
	p.pid = cmd.Process.Pid
	go p.waitExit()
	return p, nil
}

// waitExit waits for the leader to exit without reaping it: through a pidfd in the
// runtime's poller when the kernel has them (Linux 5.10; no thread blocked in waitid per
// session: measured 10-20 % fewer context switches and CPU per launch), else in a blocking
// waitid.
func (p *process) waitExit() {
	defer func() {
		p.exitMono = trace.Mono()
		close(p.exited)
	}()
	var info unix.Siginfo
	if fd, err := unix.PidfdOpen(p.pid, unix.PIDFD_NONBLOCK); err == nil {
		f := os.NewFile(uintptr(fd), "pidfd")
		defer f.Close()
		if rc, err := f.SyscallConn(); err == nil {
			var werr error
			// Read calls the function again each time the pidfd becomes readable (the
			// process exited); WNOHANG tells "not yet" (no signal in info) from exited.
			err = rc.Read(func(fd uintptr) bool {
				info = unix.Siginfo{}
				werr = unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOWAIT|unix.WNOHANG, nil)
				return werr != unix.EINTR && (werr != nil || info.Signo != 0)
			})
			if err == nil && werr == nil {
				return
			}
		}
	}
	for {
		err := unix.Waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return
		}
	}
}

// signal sends sig to the process group while it is not reaped.
func (p *process) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return os.ErrProcessDone
	}
	err := syscall.Kill(-p.pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// kill kills the whole process group.
func (p *process) kill() { p.signal(syscall.SIGKILL) }

// resize sets the pty size; the kernel sends SIGWINCH to the terminal's foreground group.
func (p *process) resize(ws WinSize) error {
	if p.ptmx == nil {
		return nil
	}
	return setsize(p.ptmx, ws)
}

// openPTY opens a pty pair with the master in non-blocking mode, so that reads honour
// deadlines and Close interrupts them. (pty.Open's own ioctls go through File.Fd, which
// switches the master to blocking mode for good; a fresh descriptor undoes that.)
func openPTY() (ptmx, pts *os.File, err error) {
	m, pts, err := pty.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("host: open pty: %w", err)
	}
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	m.Close()
	if err == nil {
		err = unix.SetNonblock(fd, true)
		if err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		pts.Close()
		return nil, nil, fmt.Errorf("host: open pty: %w", err)
	}
	return os.NewFile(uintptr(fd), "/dev/ptmx"), pts, nil
}

// setsize sets a pty's window size without File.Fd (which would make it blocking, and
// races with Close).
func setsize(ptmx *os.File, ws WinSize) error {
	rc, err := ptmx.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	err = rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: ws.Rows, Col: ws.Cols})
	})
	if err != nil {
		return err
	}
	return ierr
}

// closeStdin ends the program's input (pipe mode; a terminal has no EOF of its own).
func (p *process) closeStdin() {
	if p.ptmx == nil {
		p.stdin.Close()
	}
}

// afterExit bounds a read that is blocked when the leader exits: descendants (Wine's
// services, daemons) may hold the pipe or the pty open with nothing more to say. The bound
// is idle time, not time since the exit: outputReader re-arms it on every read, so output
// that waits for the guest's credit (`prog | less`) is never cut.
func (p *process) afterExit() {
	<-p.exited
	// time.Now here, not the exit time: a later deadline than a read's own only extends it.
	deadline := time.Now().Add(p.drain)
	p.stdout.SetReadDeadline(deadline)
	if p.stderr != nil {
		p.stderr.SetReadDeadline(deadline)
	}
}

// output returns the reader of one of the program's outputs.
func (p *process) output(f *os.File) outputReader {
	return outputReader{f: f, exited: p.exited, drain: p.drain, cut: &p.cut}
}

// outputReader reads a program's output. Once the leader has exited, each read may wait
// at most drain with nothing to read before it ends as EOF (the pipe or pty is held open by
// descendants): the deadline is armed at each read, that is only while the relay has
// credit for more (wire.Writer.ReadFrom reads only then), and a deadline that passes with
// data in the buffer (FIONREAD) does not end the output. A pty's EIO (all slave ends
// closed) and a closed file read as EOF too.
type outputReader struct {
	f      *os.File
	exited <-chan struct{} // nil: no bound (tests)
	drain  time.Duration
	cut    *atomic.Bool // set when the drain deadline, not EOF, ends the output; may be nil
}

func (o outputReader) Read(b []byte) (int, error) {
	for {
		if o.exited != nil {
			select {
			case <-o.exited:
				o.f.SetReadDeadline(time.Now().Add(o.drain))
			default:
			}
		}
		n, err := o.f.Read(b)
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) && buffered(o.f) > 0 {
			continue // data came in as the deadline passed: not idle
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && o.cut != nil {
			o.cut.Store(true)
		}
		if err != nil && (errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, syscall.EIO) || errors.Is(err, os.ErrClosed)) {
			err = io.EOF
		}
		return n, err
	}
}

// buffered is how many bytes a pipe or pty holds unread (FIONREAD, which Linux spells
// TIOCINQ; 0 when unknown).
func buffered(f *os.File) int {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	rc.Control(func(fd uintptr) {
		if v, err := unix.IoctlGetInt(int(fd), unix.TIOCINQ); err == nil {
			n = v
		}
	})
	return n
}

// reap waits for the leader's exit, collects its status and releases every file.
func (p *process) reap() ExitStatus {
	<-p.exited
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.reaped {
		err := p.cmd.Wait() // the leader has exited: returns at once
		p.r.done(p.pid)
		p.reaped = true
		p.status = statusOf(p.cmd.ProcessState, err)
		p.stdin.Close()
		p.stdout.Close()
		if p.stderr != nil {
			p.stderr.Close()
		}
	}
	return p.status
}

func statusOf(ps *os.ProcessState, err error) ExitStatus {
	if ps == nil {
		return ExitStatus{Code: 255}
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ExitStatus{Signal: ws.Signal(), Core: ws.CoreDump()}
	}
	return ExitStatus{Code: ps.ExitCode()}
}

// pipeSize is what growPipe asks for (the unprivileged maximum by default, fs.pipe-max-size).
const pipeSize = 1 << 20

// growPipe enlarges a pipe's buffer; failure (a lower pipe-max-size) leaves it as it is.
func growPipe(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize) })
	}
}
