package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"lab/wire"
)

// Exit statuses of the interpreter when the program did not run.
const (
	ExitCannotRun = 126 // relay unreachable, refused, protocol error
	ExitNotFound  = 127 // the relay says the program does not exist
)

// forwarded are the signals the interpreter passes to the host process
// group. SIGWINCH becomes a Resize.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGWINCH}

// giveUpAfter: after this many terminating signals with no Exit from the
// relay, the interpreter leaves (closing the connection, which makes the
// relay kill the process group).
const giveUpAfter = 3

// Main is the binfmt interpreter: args is its argv (`interp PATH ARGV0
// ARGS...`). It runs the program through the relay, with fds 0, 1 and 2
// as the program's stdio, and returns the exit status to exit with. The
// terminal is restored before it returns, on every path. Its caller exits right
// after: once the program ran, the relay's connection is left open for that exit
// to close.
func Main(args []string) int {
	in := &interp{stderr: os.Stderr, tr: openTrace(os.Getenv)}
	defer in.tr.close()
	return in.run(args)
}

type interp struct {
	stderr  io.Writer
	relay   string
	restore func()      // puts the terminal back; set while it is raw
	sigs    *sigWatch   // the forwarded signals' handlers, once the request went out
	tr      *guestTrace // nil unless LAB_TRACE is set (lab trace)
}

// fail restores the terminal, prints one line and returns code.
func (in *interp) fail(code int, format string, a ...any) int {
	if in.restore != nil {
		in.restore()
	}
	line := fmt.Sprintf("lab-interop: "+format+"\n", a...)
	in.tr.failed(code, line)
	io.WriteString(in.stderr, line)
	return code
}

func (in *interp) run(args []string) int {
	in.tr.argv(args)
	in.tr.binfmt(args)
	file, argv, err := BinfmtArgv(args)
	if err != nil {
		return in.fail(ExitCannotRun, "%v", err)
	}
	cfg, cfgPath, err := LoadConfig(os.Getenv)
	if err != nil {
		return in.fail(ExitCannotRun, "interop is not configured: %v (run `lab provision` on the host)", trimPrefix(err))
	}
	in.relay = cfg.Relay
	in.tr.config(cfgPath, cfg)
	// getcwd(2), one system call, not os.Getwd: that stats "." and $PWD to prefer the logical
	// path, two round trips to the 9p server when the cwd is in a share (/mnt/c), and a
	// logical path through a guest symlink the host could not follow anyway.
	cwd, err := unix.Getwd()
	if err != nil {
		cwd = "" // the relay falls back to its default directory
	}
	execFD := binfmtExecFD()
	req, code, err := buildLaunch(file, argv, cwd, cfg, execFD)
	if err != nil {
		if code == ExitCannotRun && errors.Is(err, errUnknownFormat) {
			return in.fail(code, "%s: %v (no rule in %s matches)", file, err, cfgPath)
		}
		return in.fail(code, "%s: %v", file, err)
	}
	req.TraceID = in.tr.ID()
	in.tr.launch(req)
	token, err := ReadToken(cfg)
	if err != nil {
		return in.fail(ExitCannotRun, "cannot read the interop token: %v (is this user allowed to run host programs?)", trimPrefix(err))
	}
	tty, rows, cols := foregroundTTY()
	if tty {
		req.Flags |= wire.LaunchTTY
		req.Rows, req.Cols = rows, cols
	}

	s, result, code := in.launchRetrying(cfg, token, req)
	if execFD >= 0 {
		// Closed only now, while the program runs on the host: for a file in a share its
		// close is a round trip to the 9p server (the clunk), which before the connect
		// would delay the launch.
		unix.Close(execFD)
	}
	if s == nil {
		return code
	}
	keep := false // the program's exit leaves the session to the process's exit (see below)
	defer func() {
		if !keep {
			s.Close()
		}
	}()
	in.tr.result(result)
	if result.Errno != 0 {
		// The relay's message is a whole line naming the program.
		if result.Message != "" {
			return in.fail(ExitCodeFor(result.Errno), "%s (relay at %s)", oneLine(result.Message), cfg.Relay)
		}
		return in.fail(ExitCodeFor(result.Errno), "%s: %v (relay at %s)", file, result.Errno, cfg.Relay)
	}
	s.SetDeadline(time.Time{})

	// The program runs.
	signal.Ignore(syscall.SIGPIPE) // a closed stdout becomes EPIPE, passed on as CloseRead
	if in.sigs == nil {
		in.sigs = watchSignals() // cannot be: the request went out
	}
	sigc := in.sigs.launched()
	if tty {
		if old, err := term.MakeRaw(0); err == nil {
			in.restore = sync.OnceFunc(func() { term.Restore(0, old) })
			defer in.restore()
		}
	}

	if !tty {
		growPipe(1)
		growPipe(2)
	}
	bulk := &bulkSwitch{set: oneP}
	go func() { n := copyIn(s.Writer(wire.Stdin), os.Stdin, bulk); in.tr.stream("stdin", n, nil) }()
	outDone := make(chan error, 2)
	out := func(id wire.StreamID, name string, f *os.File) {
		n, err := copyOut(s.Reader(id), f, bulk)
		in.tr.stream(name, n, err)
		outDone <- err
	}
	go out(wire.Stdout, "stdout", os.Stdout)
	go out(wire.Stderr, "stderr", os.Stderr)

	exitc := make(chan *wire.Exit, 1)
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := s.Recv(context.Background())
			if err != nil {
				errc <- err
				return
			}
			if e, ok := m.(*wire.Exit); ok {
				exitc <- e
				return
			}
		}
	}()

	kills := 0
	for {
		select {
		case sig := <-sigc:
			if sig == syscall.SIGWINCH {
				if tty {
					if ws, err := unix.IoctlGetWinsize(0, unix.TIOCGWINSZ); err == nil {
						s.Send(&wire.Resize{Rows: ws.Row, Cols: ws.Col, XPixel: ws.Xpixel, YPixel: ws.Ypixel})
					}
				}
				continue
			}
			signo := sig.(syscall.Signal)
			in.tr.signal(sig)
			s.Send(&wire.Signal{Signo: uint8(signo)})
			if kills++; kills >= giveUpAfter {
				return in.fail(128+int(signo), "the program did not stop after %d signals; leaving it to the relay to kill", kills)
			}
		case e := <-exitc:
			// stdout and stderr ended before Exit (same ordered
			// connection); wait until they are written out.
			<-outDone
			<-outDone
			in.tr.exit(e)
			// Not s.Close: the process exits when Main returns, and the kernel closes the
			// connection then as close(2) would (the relay waits for that close). Close
			// would first wake the session's reader and wait for it to end: a few handoffs
			// between threads, and at times a new thread, about 3 ms under TCG.
			keep = true
			return e.Status()
		case err := <-errc:
			<-outDone
			<-outDone
			var pe *wire.PeerError
			if errors.As(err, &pe) {
				return in.fail(ExitCannotRun, "relay: %s", oneLine(pe.Message))
			}
			if errors.Is(err, io.EOF) {
				return in.fail(ExitCannotRun, "the relay at %s closed the connection before the program exited", cfg.Relay)
			}
			return in.fail(ExitCannotRun, "lost the relay at %s: %v", cfg.Relay, trimPrefix(err))
		}
	}
}

// sigWatch holds the forwarded signals from the request's sending to the interpreter's exit.
//
// Why while the relay answers: every signal.Notify is a round trip with the runtime's signal
// thread (a locked OS thread it starts on first use): in the TCG guest the five cost about
// 30 context switches and two more threads. Registered once the program ran, that work
// competed with the host program for the host's cores; registered in a goroutine started
// right after the request went out, it runs while the interpreter waits for the relay's
// answer (not earlier: the relay's hello timeout runs from its accept, and a thousand
// interpreters starting at once should send first). And the handlers are never removed:
// Main's process exits when it returns, and signal.Stop would be another round trip per
// signal on the way to the exit status.
type sigWatch struct {
	ready chan struct{}  // closed once the handlers are in place
	start chan struct{}  // closed once the program runs on the host
	fwd   chan os.Signal // signals to forward, after start
}

// watchSignals starts catching the forwarded signals. Until launched is called, a caught
// terminating signal ends the interpreter as it ended it before there was a handler (the
// runtime's default action for it: the process dies of that signal), so a ^C during a slow
// connect or handshake still stops it at once, and a launch that fails never passes one on.
func watchSignals() *sigWatch {
	w := &sigWatch{ready: make(chan struct{}), start: make(chan struct{}), fwd: make(chan os.Signal, 8)}
	go w.loop()
	return w
}

func (w *sigWatch) loop() {
	c := make(chan os.Signal, 8)
	signal.Notify(c, forwarded...)
	close(w.ready)
	for sig := range c {
		select {
		case <-w.start:
			w.fwd <- sig
			continue
		default:
		}
		if sig == syscall.SIGWINCH {
			continue // its default action is none
		}
		signal.Reset(sig)
		syscall.Kill(syscall.Getpid(), sig.(syscall.Signal))
	}
}

// launched waits until the handlers are in place and returns the channel of the signals to
// forward from now on.
func (w *sigWatch) launched() <-chan os.Signal {
	<-w.ready
	close(w.start)
	return w.fwd
}

// Retrying a refusal with EAGAIN: the relay says so only before the program started
// (too many connections waiting to authenticate, a relay shutting down, the host out of
// processes or descriptors), so a new attempt cannot run the program twice. Attempts
// back off exponentially with jitter, so a thousand interpreters refused at once do not
// come back at once; they stop when the next wait would pass the connect timeout.
const (
	retryFirst = 10 * time.Millisecond
	retryMax   = time.Second
)

// retryWait is the pause before attempt n+1 (n >= 1): retryFirst doubled per attempt up
// to retryMax, of which a random half is left out (jitter).
func retryWait(n int, rnd func(int64) int64) time.Duration {
	d := retryFirst << min(n-1, 10)
	d = min(d, retryMax)
	return d/2 + time.Duration(rnd(int64(d/2)+1))
}

// launchRetrying connects and runs the handshake, again after an EAGAIN refusal within
// the connect timeout. It returns the session and the relay's answer, or nil and the
// exit status after reporting the failure.
func (in *interp) launchRetrying(cfg *Config, token []byte, req *wire.Launch) (*wire.Session, *wire.LaunchResult, int) {
	give := time.Now().Add(cfg.ConnectTimeout)
	for attempt := 1; ; attempt++ {
		s, result, code := in.launchOnce(cfg, token, req)
		if s == nil || result.Errno != wire.EAGAIN {
			return s, result, code
		}
		wait := retryWait(attempt, rand.Int64N)
		if time.Now().Add(wait).After(give) {
			if result.Message != "" {
				result.Message = fmt.Sprintf("%s (%d attempts in %v)", result.Message, attempt, cfg.ConnectTimeout)
			}
			return s, result, 0
		}
		s.Close()
		in.tr.retry(attempt, result, wait)
		time.Sleep(wait)
	}
}

// launchOnce connects to the relay and runs the handshake: Hello + Launch out in one
// write, Hello and LaunchResult back, bounded by the handshake timeout.
func (in *interp) launchOnce(cfg *Config, token []byte, req *wire.Launch) (*wire.Session, *wire.LaunchResult, int) {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ConnectTimeout)
	dialStart := time.Now()
	conn, err := Dial(ctx, cfg.Relay)
	cancel()
	if err != nil {
		return nil, nil, in.fail(ExitCannotRun, "cannot reach the relay at %s: %v", cfg.Relay, dialReason(err, cfg.ConnectTimeout))
	}
	in.tr.connected(conn, cfg.Relay, time.Since(dialStart))
	s := wire.NewSession(conn, wire.RoleGuest)
	s.SetDeadline(time.Now().Add(cfg.HandshakeTimeout))
	hello, sent := wire.NewHello(token), in.tr.now()
	sendErr := s.Send(hello, req)
	if sendErr == nil {
		in.tr.sentHandshake(sent, hello, req)
		if in.sigs == nil {
			// The handlers go in while the relay answers (see sigWatch).
			in.sigs = watchSignals()
		}
	}
	for {
		m, err := s.Recv(context.Background())
		if err != nil {
			s.Close()
			if sendErr != nil {
				// The relay had closed before the frames went out; a refusal it sent
				// first (EAGAIN: a handshake it timed out under load) would be read above.
				err = sendErr
			}
			return nil, nil, in.handshakeFailed(err, cfg.HandshakeTimeout)
		}
		switch m := m.(type) {
		case *wire.Hello:
			if err := wire.CheckVersion(m); err != nil {
				s.Close()
				return nil, nil, in.fail(ExitCannotRun, "%v", trimPrefix(err))
			}
			in.tr.relayHello(m)
			// The relay's Hello alone: the launch is authorised and waits for one of the
			// relay's session slots (it sends its Hello with the LaunchResult otherwise).
			// Wait for it as long as it takes, as a program waits for any resource.
			s.SetDeadline(time.Time{})
		case *wire.LaunchResult:
			if sendErr != nil && m.Errno == 0 {
				s.Close() // cannot be: the relay started a launch it did not read
				return nil, nil, in.handshakeFailed(sendErr, cfg.HandshakeTimeout)
			}
			return s, m, 0
		default:
			s.Close()
			return nil, nil, in.fail(ExitCannotRun, "relay at %s sent %v before the launch result", cfg.Relay, m.Type())
		}
	}
}

func (in *interp) handshakeFailed(err error, timeout time.Duration) int {
	var pe *wire.PeerError
	switch {
	case errors.As(err, &pe):
		return in.fail(ExitCannotRun, "relay: %s", oneLine(pe.Message))
	case isTimeout(err):
		return in.fail(ExitCannotRun, "the relay at %s did not answer within %v", in.relay, timeout)
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return in.fail(ExitCannotRun, "the relay at %s closed the connection during the handshake (wrong token or version? see the relay's log)", in.relay)
	}
	return in.fail(ExitCannotRun, "handshake with the relay at %s failed: %v", in.relay, trimPrefix(err))
}

var errUnknownFormat = errors.New("unknown executable format")

// buildLaunch reads the file's head, picks the format and fills the
// request. The int is the exit status for the error.
func buildLaunch(file string, argv []string, cwd string, cfg *Config, execFD int) (*wire.Launch, int, error) {
	head, real, err := readHead(file, execFD)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, ExitNotFound, errors.New("no such file or directory")
		}
		return nil, ExitCannotRun, err
	}
	req := &wire.Launch{Argv: argv, Cwd: cwd, Env: SelectEnv(os.LookupEnv)}
	if cfg.CwdWarning {
		req.Flags |= wire.LaunchCwdWarning
	}
	req.Format = DetectFormatOf(file, head, cfg.Formats)
	switch req.Format {
	case "":
		return nil, ExitCannotRun, errUnknownFormat
	case wire.FormatHost:
		name, err := wire.ParseStub(head)
		if err != nil {
			return nil, ExitCannotRun, trimPrefix(err)
		}
		req.Path = name
	default:
		req.Path = real
		if req.Path == "" {
			req.Path = resolvePath(file, cwd)
		}
	}
	return req, 0, nil
}

// readHead reads the first headSize bytes of the file (fewer if shorter) and returns
// them with the file's absolute path, guest symlinks resolved, as the kernel names the
// open file ("" when it cannot: no /proc). It reads from execFD, the file binfmt_misc
// passed open (flag O), when that is not -1, and leaves it open; else it opens file.
//
// Why the passed descriptor: it is the very file the kernel matched and exec'd, and for a
// file in a share (/mnt/c: 9p without a cache) opening it again costs a walk of its path,
// an open, a getattr and the clunks, each a round trip to the 9p server, where reading
// the passed one costs one read (and its clunk, moved from the exec to its close).
func readHead(file string, execFD int) (head []byte, real string, err error) {
	buf := make([]byte, headSize+1)
	if execFD >= 0 {
		// Not an os.File: its finalizer could close the descriptor the caller closes.
		n := 0
		for n < len(buf) {
			m, err := unix.Pread(execFD, buf[n:], int64(n))
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return nil, "", &os.PathError{Op: "read", Path: file, Err: err}
			}
			if m == 0 {
				break
			}
			n += m
		}
		return buf[:n], fdPath(execFD), nil
	}
	f, err := os.Open(file)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, "", err
	}
	defer f.Close()
	n, err := io.ReadFull(f, buf)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, "", err
	}
	return buf[:n], openPath(f), nil
}

// atExecFD is AT_EXECFD, the auxiliary vector's entry for the descriptor of the program
// binfmt_misc passes open (flag O).
const atExecFD = 2

// binfmtExecFD is the descriptor binfmt_misc passed (AT_EXECFD), or -1: started without
// flag O (a rule registered before lab used it), or not by binfmt_misc.
func binfmtExecFD() int {
	auxv, err := unix.Auxv()
	if err != nil {
		return -1
	}
	for _, kv := range auxv {
		if kv[0] == atExecFD {
			return int(kv[1])
		}
	}
	return -1
}

// openPath is the absolute path of the open file f, symlinks resolved, from
// /proc/self/fd: one readlink answered from the kernel's dentries, where
// filepath.EvalSymlinks costs an lstat per path component, each a round trip to the
// 9p server for a file in a share (/mnt/c/...). It also names the very file whose
// head was read, even if a symlink on the way changed since. "" when /proc is not
// there or the file was deleted meanwhile.
func openPath(f *os.File) string {
	return fdPath(int(f.Fd()))
}

// fdPath is openPath for a bare descriptor.
func fdPath(fd int) string {
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil || !filepath.IsAbs(p) || strings.HasSuffix(p, " (deleted)") {
		return ""
	}
	return p
}

// resolvePath makes the kernel's path (as given to execve, maybe
// relative) absolute and resolves guest symlinks, which the host cannot
// see. When resolution fails the absolute path is sent as is.
func resolvePath(file, cwd string) string {
	if !filepath.IsAbs(file) && cwd != "" {
		file = filepath.Join(cwd, file)
	}
	if r, err := filepath.EvalSymlinks(file); err == nil && filepath.IsAbs(r) {
		return r
	}
	return filepath.Clean(file)
}

// dialReason turns a dial error into its plain reason.
func dialReason(err error, timeout time.Duration) string {
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		return fmt.Sprintf("no connection within %v", timeout)
	}
	var de *dialError
	if errors.As(err, &de) && de.network == "vsock" && errors.Is(err, syscall.ECONNRESET) {
		// The host's answer to the connection request was a reset: nothing listens on the
		// port, or lab's vsock device is at its connection limit (it logs that); the guest
		// cannot tell which.
		return "the host refused the connection (connection reset by peer): no relay listens on that port, " +
			"or the VM has too many open vsock connections (see the hostagent's log)"
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err.Error()
	}
	return trimPrefix(err).Error()
}

// isTimeout reports whether an error in err's chain is a timeout (a deadline, ETIMEDOUT),
// as net.Error's Timeout does.
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// trimPrefix drops our package prefixes so a printed line has only one
// "lab-interop:" in front.
func trimPrefix(err error) error {
	s := err.Error()
	for _, p := range []string{"guest: ", "wire: "} {
		if len(s) > len(p) && s[:len(p)] == p {
			return errors.New(s[len(p):])
		}
	}
	return err
}

// foregroundTTY reports whether fds 0, 1 and 2 are the same terminal, its
// foreground process group is ours and it has a size (WSL's conditions
// for a pseudoconsole), and the size.
func foregroundTTY() (ok bool, rows, cols uint16) {
	var dev uint64
	for fd := 0; fd < 3; fd++ {
		if !term.IsTerminal(fd) {
			return false, 0, 0
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil {
			return false, 0, 0
		}
		if fd == 0 {
			dev = st.Rdev
		} else if st.Rdev != dev {
			return false, 0, 0
		}
	}
	pgrp, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	if err != nil || pgrp != unix.Getpgrp() {
		return false, 0, 0
	}
	ws, err := unix.IoctlGetWinsize(0, unix.TIOCGWINSZ)
	if err != nil || ws.Row == 0 || ws.Col == 0 {
		return false, 0, 0
	}
	return true, ws.Row, ws.Col
}

// copyIn sends stdin until EOF, then half-closes the stream, and returns the bytes sent. A read error
// (a hung-up terminal, a closed fd) counts as EOF; a stream error (the
// relay stopped reading stdin, the session ended) just stops.
func copyIn(w *wire.Writer, f *os.File, bulk *bulkSwitch) int64 {
	r := &fdReader{f: f, bulk: bulk}
	n, err := w.ReadFrom(r)
	if err != nil && r.err == nil {
		return n
	}
	w.CloseWrite()
	return n
}

// fdReader remembers read errors so they can be told apart from stream
// errors in ReadFrom.
type fdReader struct {
	f    *os.File
	err  error
	bulk *bulkSwitch // may be nil
}

func (r *fdReader) Read(p []byte) (int, error) {
	n, err := r.f.Read(p)
	r.bulk.add(n)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// fdWriter remembers write errors so they can be told apart from stream
// errors in WriteTo.
type fdWriter struct {
	f    *os.File
	err  error
	bulk *bulkSwitch // may be nil
}

func (w *fdWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.bulk.add(n)
	if err != nil {
		w.err = err
	}
	return n, err
}

// copyOut writes a stream to f until EOF and returns the bytes written. When f fails (a closed pipe)
// it tells the relay to stop the stream, so the host program gets EPIPE
// as it would locally, and keeps waiting for the exit status.
func copyOut(r *wire.Reader, f *os.File, bulk *bulkSwitch) (int64, error) {
	w := &fdWriter{f: f, bulk: bulk}
	n, err := r.WriteTo(w)
	if err != nil && w.err != nil {
		r.CloseRead()
		return n, nil
	}
	return n, err
}

// oneLine keeps a relay's message on one line and free of control
// characters (it goes to the user's terminal).
func oneLine(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c == 0x7f {
			b[i] = ' '
		}
	}
	return string(b)
}

// pipeSize is what growPipe asks for: the stream window, and the
// unprivileged maximum by default (fs.pipe-max-size).
const pipeSize = 1 << 20

// growPipe enlarges fd's buffer when it is a pipe, so that output reaches
// the reader in fewer, larger writes (fewer wake-ups on both ends); failure
// (a lower pipe-max-size, the user's pipe quota) leaves it as it is.
func growPipe(fd int) {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFIFO {
		if n, err := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0); err == nil && n < pipeSize {
			unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, pipeSize)
		}
	}
}

// bulkBytes is how much stdin, stdout and stderr move together before the interpreter drops
// to one P.
const bulkBytes = 512 << 10

// bulkSwitch calls set once, when the streams have moved bulkBytes.
//
// Why one P, and why only then: with two Ps every hand-off between the interpreter's
// goroutines wakes an idle thread to spin, so bulk transfers cost about a quarter more CPU
// (32 MiB from the host in the TCG guest: 788 ms of CPU with two Ps, 579-634 with one). But
// changing GOMAXPROCS stops the world and frees the surplus P's caches, and at start that
// costs every launch about 20 page faults in the TCG guest (163 -> 143 per launch of a
// trivial program without it), where each fault costs a fraction of a millisecond: a
// launch that moves a few bytes never pays it.
type bulkSwitch struct {
	n    atomic.Int64
	once sync.Once
	set  func()
}

func (b *bulkSwitch) add(n int) {
	if b != nil && n > 0 && b.n.Add(int64(n)) >= bulkBytes {
		b.once.Do(b.set)
	}
}

// oneP gives the process one P, unless GOMAXPROCS in the environment chose.
func oneP() {
	if _, ok := os.LookupEnv("GOMAXPROCS"); !ok {
		runtime.GOMAXPROCS(1)
	}
}
