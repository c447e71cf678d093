package host

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"lab/wire"
)

// refusal is a request the relay answers with an error and closes.
type refusal struct {
	errno wire.Errno
	msg   string // one line for the user, sent to the guest
	log   error  // what the log says (may say more than the guest is told)
}

func (e *refusal) Error() string { return e.msg }

func refuse(errno wire.Errno, log error, format string, args ...any) *refusal {
	return &refusal{errno: errno, msg: fmt.Sprintf(format, args...), log: log}
}

// accessDenied is the same reply for a wrong token and a wrong peer CID, so a prober
// cannot tell which check failed.
const accessDenied = "lab relay: access denied (the token or the VM does not match this relay; rerun `lab provision`)"

// serveConn runs one connection: handshake, launch, streams, exit. stop is closed when
// Serve's context ends (the drain): a launch still waiting for a session slot is refused.
func (r *Relay) serveConn(ctx context.Context, stop <-chan struct{}, conn net.Conn) {
	accepted := time.Now()
	id := r.nextID.Add(1)
	log := r.cfg.Logger.With("session", id, "peer", addrString(conn.RemoteAddr()))
	r.sessions.Add(1)
	tr := r.traceSession(conn)

	l, req, rf := r.handshake(conn, accepted, log, tr)
	if rf == nil {
		if l.queued, rf = r.takeSlot(stop, conn); rf != nil && l.File != nil {
			l.File.Close()
		}
	}
	if rf != nil {
		log.Warn("relay: refused", "errno", uint32(rf.errno), "reason", rf.log)
		r.refused.Add(1)
		tr.refusedLaunch(rf)
		r.reply(conn, rf)
		lingerClose(conn)
		return
	}
	defer func() { <-r.slots }()
	r.active.Add(1)
	defer r.active.Add(-1)
	start := time.Now()
	if req.TraceID != "" {
		log = log.With("trace", req.TraceID)
	}
	conn.SetDeadline(time.Time{})
	s := wire.NewSession(conn, wire.RoleHost)
	defer s.Close()

	status, err := r.run(ctx, s, l, req, log, tr)
	if err != nil {
		r.errs.Add(1)
		log.Error("relay: session failed", "err", err, "duration", time.Since(start))
		return
	}
	log.Info("relay: exit", "status", status.String(), "duration", time.Since(start))
}

// takeSlot waits for one of the MaxSessions slots; only authorised launches wait. Before
// waiting it sends the relay's Hello (queued): the interpreter then knows the launch is
// authorised and queued, and waits for its LaunchResult past its handshake timeout, so a
// launch over MaxSessions waits for a slot instead of failing.
func (r *Relay) takeSlot(stop <-chan struct{}, conn net.Conn) (queued bool, rf *refusal) {
	select {
	case r.slots <- struct{}{}:
		return false, nil
	default:
	}
	r.waiting.Add(1)
	defer r.waiting.Add(-1)
	if b, err := wire.AppendMessage(nil, wire.NewHello(nil)); err == nil {
		conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, err = conn.Write(b)
		conn.SetWriteDeadline(time.Time{})
		queued = err == nil
	}
	select {
	case r.slots <- struct{}{}:
		return queued, nil
	case <-stop:
		return queued, refuse(wire.EAGAIN, errors.New("the relay stopped before a session slot was free"), "lab relay: the relay is shutting down; try again")
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return "?"
	}
	if s := a.String(); s != "" && s != "@" {
		return a.Network() + ":" + s
	}
	return a.Network()
}

// lingerClose half-closes conn and discards what the peer still sends (bounded in time
// and bytes) before closing: closing a socket with unread data resets the connection, and
// the peer could lose the reply it has not read yet.
func lingerClose(conn net.Conn) {
	defer conn.Close()
	// Without a half-close (some net.Conn wrappers) the peer still sees the reply and
	// closes: the interpreter exits after a refusal.
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	conn.SetReadDeadline(time.Now().Add(time.Second))
	io.CopyN(io.Discard, conn, 1<<20)
}

// reply sends the relay's Hello and a failed LaunchResult on a raw connection.
func (r *Relay) reply(conn net.Conn, rf *refusal) {
	msg := rf.msg
	if len(msg) > wire.MaxMessage {
		msg = msg[:wire.MaxMessage]
	}
	b, err := wire.AppendMessage(nil, wire.NewHello(nil))
	if err == nil {
		b, err = wire.AppendMessage(b, &wire.LaunchResult{Errno: rf.errno, Message: msg})
	}
	if err != nil {
		return
	}
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	conn.Write(b)
}

// handshake reads Hello and Launch straight from the connection (exactly two frames, so
// nothing the guest sends after them is consumed), and authenticates and authorises the
// request. Until the token checks out the connection counts against MaxPending and has
// HelloTimeout; the whole handshake has HandshakeTimeout from accept. Reading the frames
// before the session starts lets a malformed or hostile first frame still get an error
// reply.
func (r *Relay) handshake(conn net.Conn, accepted time.Time, log *slog.Logger, tr *sessionTrace) (launch, *wire.Launch, *refusal) {
	if err := r.cfg.checkPeer(conn.RemoteAddr()); err != nil {
		return launch{}, nil, refuse(wire.EACCES, err, accessDenied)
	}
	pc := &pendingConn{conn: conn, key: peerKey(conn, r.cfg.PeerCIDOf)}
	r.pre.admit(pc)
	conn.SetDeadline(accepted.Add(r.cfg.HelloTimeout))
	if pc.evicted.Load() {
		conn.SetReadDeadline(time.Unix(1, 0)) // evicted before the deadline above was set
	}
	hello, rf := readHello(conn)
	if !r.pre.leave(pc) {
		return launch{}, nil, refuse(wire.EAGAIN, fmt.Errorf("evicted before authenticating: more than %d connections pending (peer %s)", r.cfg.MaxPending, pc.key),
			"lab relay: too many connections are waiting to authenticate (host limit %d); try again", r.cfg.MaxPending)
	}
	if rf != nil {
		return launch{}, nil, rf
	}
	if err := r.cfg.checkToken(hello.Token); err != nil {
		return launch{}, nil, refuse(wire.EACCES, err, accessDenied)
	}
	tr.gotHello(hello)
	conn.SetDeadline(accepted.Add(r.cfg.HandshakeTimeout))
	buf := framePool.Get().(*[]byte)
	defer framePool.Put(buf)
	m, rf := readMessage(conn, *buf)
	if rf != nil {
		return launch{}, nil, rf
	}
	req, ok := m.(*wire.Launch)
	if !ok {
		return launch{}, nil, refuse(wire.EINVAL, fmt.Errorf("second message is %v", m.Type()), "lab relay: protocol error: expected a launch request")
	}
	tr.gotLaunch(req)
	l, rf := r.authorise(req)
	if rf != nil {
		return launch{}, nil, rf
	}
	tr.decided(&r.cfg, req, l)
	if req.TraceID != "" {
		log = log.With("trace", req.TraceID)
	}
	log.Info("relay: launch", "guest_path", req.Path, "program", l.Program, "format", req.Format,
		"runner", l.Format.String(), "args", len(req.Argv), "guest_cwd", req.Cwd, "tty", req.Flags&wire.LaunchTTY != 0)
	return l, req, nil
}

// maxHello bounds the first frame's payload: a Hello of this major is 16 bytes and the
// token. Unauthenticated peers get no more than this read into memory.
const maxHello = 16 + wire.MaxToken

// notLab is the reply to a peer whose first bytes are not a lab frame (an HTTP or TLS
// probe, a port scanner): named as such rather than by the length its bytes happen to spell.
func notLab(first []byte) *refusal {
	return refuse(wire.EPROTO, fmt.Errorf("not a lab peer: it sent %q", first),
		"lab relay: not a lab peer: the connection does not speak the lab interop protocol")
}

// readHello reads the first frame, which must be a Hello. The type byte and the magic are
// checked before the length, so that a foreign protocol is named as such.
func readHello(conn net.Conn) (*wire.Hello, *refusal) {
	var b [wire.HeaderSize + maxHello]byte
	if _, err := io.ReadFull(conn, b[:wire.HeaderSize]); err != nil {
		return nil, readRefusal(err)
	}
	n := int64(binary.BigEndian.Uint32(b[:4])) - 1
	switch t := wire.Type(b[4]); {
	case t == wire.TypeHello && n >= 4:
		if _, err := io.ReadFull(conn, b[wire.HeaderSize:wire.HeaderSize+4]); err != nil {
			return nil, readRefusal(err)
		}
		if string(b[wire.HeaderSize:wire.HeaderSize+4]) != wire.HelloMagic {
			return nil, notLab(b[:wire.HeaderSize+4])
		}
	case t == wire.TypeHello || n < 0 || !t.Known():
		return nil, notLab(b[:wire.HeaderSize])
	case n > wire.MaxPayload:
		return nil, refuse(wire.E2BIG, fmt.Errorf("first frame of %d bytes", n+wire.HeaderSize), "lab relay: request refused: a frame is larger than the %d-byte limit", wire.MaxFrame)
	default:
		return nil, refuse(wire.EINVAL, fmt.Errorf("first message is %v", t), "lab relay: protocol error: the first message must be a hello")
	}
	if n > maxHello {
		return nil, refuse(wire.E2BIG, fmt.Errorf("hello of %d bytes", n+wire.HeaderSize), "lab relay: request refused: the hello is larger than %d bytes", maxHello)
	}
	if _, err := io.ReadFull(conn, b[wire.HeaderSize+4:wire.HeaderSize+n]); err != nil {
		return nil, readRefusal(err)
	}
	var h wire.Hello
	if err := h.UnmarshalBinary(b[wire.HeaderSize : wire.HeaderSize+n]); err != nil {
		return nil, decodeRefusal(err)
	}
	return &h, nil
}

// readRefusal maps a failed read in the handshake to a refusal.
func readRefusal(err error) *refusal {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		// EAGAIN: nothing ran, and a real interpreter that was slow to send (a guest
		// starved by a thousand launches at once) tries again.
		return refuse(wire.EAGAIN, err, "lab relay: handshake timed out (a guest or host under heavy load?); try again")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return refuse(wire.EINVAL, err, "lab relay: protocol error: the connection ended in the middle of the request")
	}
	return refuse(wire.EINVAL, err, "lab relay: protocol error: %s", strings.TrimPrefix(err.Error(), "wire: "))
}

// decodeRefusal maps a message that does not decode to a refusal.
func decodeRefusal(err error) *refusal {
	var ve *wire.VersionError
	if errors.As(err, &ve) || errors.Is(err, wire.ErrNotLab) {
		return refuse(wire.EPROTO, err, "lab relay: %s", strings.TrimPrefix(err.Error(), "wire: "))
	}
	return refuse(wire.EINVAL, err, "lab relay: malformed request: %s", strings.TrimPrefix(err.Error(), "wire: "))
}

// peerKey names the peer for MaxPending's fairness: the uid on a Unix socket
// (SO_PEERCRED), the context ID on vsock, else the remote host; "" when unknown.
func peerKey(conn net.Conn, cidOf func(net.Addr) (uint32, bool)) string {
	if uc, ok := conn.(*net.UnixConn); ok {
		if raw, err := uc.SyscallConn(); err == nil {
			var cred *unix.Ucred
			raw.Control(func(fd uintptr) {
				cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
			})
			if cred != nil {
				return "uid:" + strconv.Itoa(int(cred.Uid))
			}
		}
		return ""
	}
	a := conn.RemoteAddr()
	if cid, ok := cidOf(a); ok {
		return "cid:" + strconv.FormatUint(uint64(cid), 10)
	}
	if a == nil {
		return ""
	}
	if h, _, err := net.SplitHostPort(a.String()); err == nil {
		return a.Network() + ":" + h
	}
	return ""
}

var framePool = sync.Pool{New: func() any { b := make([]byte, wire.MaxPayload); return &b }}

// readMessage reads one control frame and maps every failure to a refusal.
func readMessage(conn net.Conn, buf []byte) (wire.Message, *refusal) {
	t, p, err := wire.ReadFrame(conn, buf)
	if err != nil {
		if errors.Is(err, wire.ErrFrameTooLarge) {
			return nil, refuse(wire.E2BIG, err, "lab relay: request refused: a frame is larger than the %d-byte limit", wire.MaxFrame)
		}
		return nil, readRefusal(err)
	}
	switch t {
	case wire.TypeHello, wire.TypeLaunch:
	default:
		return nil, refuse(wire.EINVAL, fmt.Errorf("unexpected %v frame in the handshake", t), "lab relay: protocol error: unexpected %v frame", t)
	}
	m, err := wire.Unmarshal(t, p)
	if err != nil {
		return nil, decodeRefusal(err)
	}
	return m, nil
}

// authorise turns a launch request into a host launch, or refuses it.
func (r *Relay) authorise(req *wire.Launch) (launch, *refusal) {
	var program string
	var file *os.File // the checked share file, run through its descriptor
	var err error
	if req.Format == wire.FormatHost {
		program, err = r.cfg.resolveExposed(req.Path)
	} else {
		file, program, err = r.cfg.openProgram(req.Path)
	}
	if err != nil {
		var de *DeniedError
		switch {
		case errors.As(err, &de):
			return launch{}, refuse(wire.EPERM, err, "lab relay: %s: %s", de.Path, de.Reason)
		case errors.Is(err, errNotFound), errors.Is(err, fs.ErrNotExist):
			return launch{}, refuse(wire.ENOENT, err, "lab relay: %s: no such file on the host", req.Path)
		default:
			return launch{}, refuse(wire.EACCES, err, "lab relay: %s: %s", req.Path, strings.TrimPrefix(err.Error(), "host: "))
		}
	}
	if err := checkEnvPolicy(req.Env, r.cfg.EnvAllow); err != nil {
		if file != nil {
			file.Close()
		}
		var de *EnvDeniedError
		errors.As(err, &de)
		return launch{}, refuse(wire.EPERM, err, "lab relay: variable %s may not cross to the host (host policy, %s; see lab relay --allow-env)", de.Name, de.Class)
	}
	format, interp, err := r.cfg.detectFormat(program, file)
	if err != nil {
		if file != nil {
			file.Close()
		}
		return launch{}, refuse(wire.EACCES, err, "lab relay: %s: cannot read the program", req.Path)
	}
	args := req.Argv
	if req.Format == wire.FormatHost {
		args = exposedArgv(req.Path, req.Argv)
	}
	return launch{
		File:    file,
		Program: program,
		Args:    args,
		Env:     hostEnv(r.cfg.Env, req.Env, r.cfg.guestToHostPath),
		Format:  format,
		Interp:  interp,
	}, nil
}

// run starts the program and serves the session until the program's exit status is sent
// or the connection is lost.
func (r *Relay) run(ctx context.Context, s *wire.Session, l launch, req *wire.Launch, log *slog.Logger, tr *sessionTrace) (ExitStatus, error) {
	if l.File != nil {
		defer l.File.Close() // the child has its own copy once started
	}
	dir, warning := r.cfg.mapCwd(req.Cwd)
	l.Dir = dir
	tr.mappedCwd(req.Cwd, dir, warning, req.Flags&wire.LaunchCwdWarning != 0)
	tty := req.Flags&wire.LaunchTTY != 0
	var ws *WinSize
	if tty {
		ws = &WinSize{Rows: req.Rows, Cols: req.Cols}
	}
	fail := func(errno wire.Errno, err error, msg string) (ExitStatus, error) {
		tr.refusedLaunch(&refusal{errno: errno, msg: msg, log: err})
		s.Send(append(l.hello(), &wire.LaunchResult{Errno: errno, Message: msg})...)
		return ExitStatus{}, err
	}
	cmd, drain, err := r.cfg.command(l)
	if err != nil {
		return fail(wire.ENOEXEC, err, "lab relay: "+strings.TrimPrefix(err.Error(), "host: "))
	}
	p, err := startProcess(cmd, ws, drain, r.reaper)
	if err != nil {
		errno, why := startErrno(err)
		return fail(errno, err, fmt.Sprintf("lab relay: %s: %s", req.Path, why))
	}
	r.launched.Add(1)
	tr.started(p, cmd, req)
	tr.replied(0)
	if err := s.Send(append(l.hello(), &wire.LaunchResult{})...); err != nil {
		p.kill()
		p.reap()
		return ExitStatus{}, fmt.Errorf("host: send launch result: %w", err)
	}
	if warning != "" {
		log.Info("relay: cwd fallback", "guest_cwd", req.Cwd, "host_dir", dir, "why", warning)
	}
	if warning != "" && req.Flags&wire.LaunchCwdWarning != 0 {
		line := warning + "\n"
		if tty {
			line = warning + "\r\n" // the guest terminal is in raw mode
		}
		io.WriteString(s.Writer(wire.Stderr), line)
	}

	go p.afterExit()
	// stdin is not waited for: the guest's stdin may stay open long after the program
	// ended (a terminal); reap closes the program's end, which ends the pump.
	go r.pumpStdin(s, p)
	// The last pump to finish closes outputsDone (no extra goroutine to wait for both).
	outputsDone := make(chan struct{})
	var pumping atomic.Int32
	pumping.Store(2)
	pump := func(id wire.StreamID, f *os.File) {
		r.pumpOutput(s, p, id, f, tr)
		if pumping.Add(-1) == 0 {
			close(outputsDone)
		}
	}
	go pump(wire.Stdout, p.stdout)
	go pump(wire.Stderr, p.stderr)

	// Control messages until the session ends; the end of the session before the exit
	// status was sent (a dead interpreter) kills the process group.
	ctlDone := make(chan error, 1)
	go func() {
		for {
			m, err := s.Recv(ctx)
			if err != nil {
				ctlDone <- err
				return
			}
			switch m := m.(type) {
			case *wire.Signal:
				log.Debug("relay: signal", "signo", m.Signo)
				tr.delivered(m.Signo)
				p.signal(syscall.Signal(m.Signo))
			case *wire.Resize:
				if err := p.resize(WinSize{Rows: m.Rows, Cols: m.Cols}); err != nil {
					log.Debug("relay: resize", "err", err)
				}
			default:
				log.Warn("relay: ignoring an unexpected message", "type", m.Type().String())
			}
		}
	}()

	var lost error
	select {
	case <-outputsDone:
		// The outputs are closed; the program may still run (it closed them itself).
		select {
		case <-p.exited:
		case err := <-ctlDone:
			lost = err
			p.kill()
		}
	case err := <-ctlDone:
		// The connection ended (or ctx: the relay's drain deadline) before the program.
		lost = err
		p.kill()
		s.Close()
		<-outputsDone
	}
	status := p.reap()
	if lost == nil {
		tr.exited(status, p)
		err := s.Send(&wire.Exit{Code: uint32(status.Code), Signal: uint8(status.Signal), Flags: coreFlag(status)})
		if err != nil {
			return status, fmt.Errorf("host: send exit status: %w", err)
		}
		// Let the guest close first: it has the exit status and closes at once; closing
		// here first could cut what is still in flight on some transports.
		t := time.NewTimer(5 * time.Second)
		select {
		case <-s.Done():
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		return status, nil
	}
	tr.lostSession(lost)
	if errors.Is(lost, context.Canceled) {
		return status, errors.New("host: killed by the relay's drain deadline")
	}
	return status, fmt.Errorf("host: connection lost before the program ended (process group killed): %w", lost)
}

func coreFlag(s ExitStatus) wire.ExitFlag {
	if s.Core {
		return wire.ExitCoreDumped
	}
	return 0
}

// startErrno maps a start failure to the errno the guest reports.
func startErrno(err error) (wire.Errno, string) {
	var ee *exec.Error
	switch {
	case errors.Is(err, syscall.ENOENT), errors.As(err, &ee) && errors.Is(ee.Err, fs.ErrNotExist):
		return wire.ENOENT, "no such file or directory (or its interpreter is missing on the host)"
	case errors.Is(err, syscall.EACCES), errors.Is(err, fs.ErrPermission):
		return wire.EACCES, "permission denied (is it executable on the host?)"
	case errors.Is(err, syscall.ENOEXEC):
		return wire.ENOEXEC, "exec format error (the host cannot run this kind of file)"
	case errors.Is(err, syscall.E2BIG):
		return wire.E2BIG, "argument list too long"
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return wire.EAGAIN, "out of resources on the host; try again"
	}
	return wire.EINVAL, strings.TrimPrefix(err.Error(), "host: ")
}

// pumpStdin copies the guest's stdin into the program until EOF. When the program stops
// reading (its stdin closed, or it exited), the guest is told to stop sending.
func (r *Relay) pumpStdin(s *wire.Session, p *process) {
	in := s.Reader(wire.Stdin)
	_, err := in.WriteTo(countWriter{p.stdin, &r.bytesIn})
	if err != nil {
		in.CloseRead()
	}
	p.closeStdin()
}

// pumpOutput copies one output of the program to the guest, then sends its EOF. When the
// guest's reader went away (`prog | head -1`), the pipe is closed so the program gets
// EPIPE/SIGPIPE as it would in the guest.
func (r *Relay) pumpOutput(s *wire.Session, p *process, id wire.StreamID, f *os.File, tr *sessionTrace) {
	w := s.Writer(id)
	defer w.CloseWrite()
	if f == nil {
		return
	}
	_, err := w.ReadFrom(countReader{tr.firstOutput(id, p.output(f)), &r.bytesOut})
	if errors.Is(err, wire.ErrStreamClosed) {
		if p.ptmx != nil {
			io.Copy(io.Discard, p.output(f)) // one file is the whole terminal: keep it drained
			return
		}
		f.Close()
	}
}

type countWriter struct {
	w io.Writer
	n *atomic.Uint64
}

func (c countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(uint64(n))
	return n, err
}

type countReader struct {
	r io.Reader
	n *atomic.Uint64
}

func (c countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(uint64(n))
	return n, err
}
