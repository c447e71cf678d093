package vm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"lab/internal/shell"
)

// dialReady waits for the SSH banner on addr and then completes an SSH handshake and
// runs `true`. With QEMU's port forwarding the TCP connect succeeds before the guest
// listens, so the banner (read with a short deadline) is the first sign of life.
func dialReady(ctx context.Context, addr string, cfg *ssh.ClientConfig) (*ssh.Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	conn.SetReadDeadline(time.Now().Add(time.Second))
	br := bufio.NewReader(conn)
	banner, err := br.Peek(4)
	if err != nil || string(banner) != "SSH-" {
		conn.Close()
		if err == nil {
			err = fmt.Errorf("no SSH banner (got %q)", banner)
		}
		return nil, err
	}
	conn.SetReadDeadline(time.Time{})
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c, chans, reqs, err := ssh.NewClientConn(&bufConn{Conn: conn, r: br}, addr, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	client := ssh.NewClient(c, chans, reqs)
	s, err := client.NewSession()
	if err == nil {
		err = s.Run("true")
		s.Close()
	}
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("running true: %w", err)
	}
	conn.SetDeadline(time.Time{})
	return client, nil
}

// bufConn is a net.Conn whose reads go through a bufio.Reader that already peeked.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

var _ net.Conn = (*bufConn)(nil)

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Client is an SSH client to a VM's guest. It goes through the VM's hostagent, which
// keeps one SSH connection to the guest, so a new Client and each Run cost no guest
// handshake. Its methods are safe for concurrent use.
type Client struct {
	ssh *ssh.Client

	mu   sync.Mutex
	sftp *sftp.Client
}

// Connect returns a Client for the VM with this name (or state directory). The
// hostagent's endpoint is pinned to the VM's host key.
func Connect(ctx context.Context, nameOrDir string) (*Client, error) {
	dir, err := StateDirOf(nameOrDir)
	if err != nil {
		return nil, err
	}
	ks, err := loadKeys(dir)
	if err != nil {
		return nil, fmt.Errorf("vm: %s is not up (lab up --name %s): %w", nameOrDir, filepath.Base(dir), err)
	}
	c, err := dialAgent(ctx, dir, ks)
	if err != nil {
		return nil, err
	}
	return &Client{ssh: c}, nil
}

func dialAgent(ctx context.Context, dir string, ks *keys) (*ssh.Client, error) {
	sock := filepath.Join(dir, FileAgentSock)
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("vm: VM %s is not running or not ready (see lab status --name %s)", filepath.Base(dir), filepath.Base(dir))
		}
		return nil, fmt.Errorf("vm: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c, chans, reqs, err := ssh.NewClientConn(conn, "lab", ks.clientConfig())
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("vm: connecting to the hostagent: %w", err)
	}
	return ssh.NewClient(c, chans, reqs), nil
}

// Reconnect asks the hostagent to replace its kept connection to the guest's sshd
// with a new one. sshd applies its configuration per connection, so after a change
// to sshd_config (and its SIGHUP) only sessions on a new connection see it; the
// hostagent's connection dates from boot. Sessions already running (on this or any
// Client) keep their old connection until they end; sessions opened after Reconnect
// returns use the new one.
func (c *Client) Reconnect(ctx context.Context) error {
	type reply struct {
		ok      bool
		payload []byte
		err     error
	}
	ch := make(chan reply, 1)
	go func() {
		ok, p, err := c.ssh.SendRequest(reconnectRequest, true, nil)
		ch <- reply{ok, p, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return fmt.Errorf("vm: reconnect: %w", r.err)
		}
		if !r.ok {
			msg := string(r.payload)
			if msg == "" {
				msg = "the hostagent refused (is it older than this lab? lab down; lab up)"
			}
			return fmt.Errorf("vm: reconnect: %s", msg)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("vm: reconnect: %w", ctx.Err())
	}
}

// Call asks the hostagent for the request name: one a Task registered with Env.Handle
// ("relay.stop") or the hostagent's own (RequestQueryStatus, RequestPowerdown,
// RequestQuit). args (nil: none) is sent as JSON; the JSON reply is decoded into reply
// (nil: ignored). A handler's error comes back as an error with its text (and
// errors.Is(err, ErrQEMUNotResponding) when QEMU did not answer). Calls on one Client
// are answered in order; when ctx ends Call returns, and the request still completes in
// the hostagent.
func (c *Client) Call(ctx context.Context, name string, args, reply any) error {
	return call(ctx, c.ssh, name, args, reply)
}

func call(ctx context.Context, conn ssh.Conn, name string, args, reply any) error {
	var payload []byte
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return fmt.Errorf("vm: hostagent %s: %w", name, err)
		}
		payload = b
	}
	type result struct {
		ok      bool
		payload []byte
		err     error
	}
	ch := make(chan result, 1)
	go func() {
		ok, p, err := conn.SendRequest(name+requestSuffix, true, payload)
		ch <- result{ok, p, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		return fmt.Errorf("vm: hostagent %s: %w", name, ctx.Err())
	}
	if r.err != nil {
		return fmt.Errorf("vm: hostagent %s: %w", name, r.err)
	}
	if !r.ok {
		var ce callError
		if json.Unmarshal(r.payload, &ce) != nil || ce.Error == "" {
			ce.Error = "refused (is the hostagent older than this lab? lab down; lab up)"
		}
		return ce.err(name)
	}
	if reply != nil {
		if err := json.Unmarshal(r.payload, reply); err != nil {
			return fmt.Errorf("vm: hostagent %s: decoding the reply: %w", name, err)
		}
	}
	return nil
}

// SSH returns the underlying client (for sessions with a pty, port forwarding, ...).
func (c *Client) SSH() *ssh.Client { return c.ssh }

// Close closes the SFTP client (if any) and the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.sftp != nil {
		c.sftp.Close()
		c.sftp = nil
	}
	c.mu.Unlock()
	return c.ssh.Close()
}

// SFTP returns the Client's SFTP client, opening it on first use. Close closes it.
func (c *Client) SFTP() (*sftp.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sftp != nil {
		return c.sftp, nil
	}
	s, err := sftp.NewClient(c.ssh, sftp.UseConcurrentWrites(true))
	if err != nil {
		return nil, fmt.Errorf("vm: sftp: %w", err)
	}
	c.sftp = s
	return s, nil
}

// Run runs cmd (a shell command line) in the guest with the given stdio (each may be
// nil) and returns its exit status. A command killed by signal N gives 128+N, as a
// shell reports it. err is set only when the command could not be run or its status
// is unknown (the connection broke, ctx ended: then the command is sent SIGKILL).
func (c *Client) Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (exit int, err error) {
	return c.Exec(ctx, cmd, ExecOptions{Stdin: stdin, Stdout: stdout, Stderr: stderr})
}

// ExecOptions says how Exec runs a command. The zero value is Run's: no stdio, no pty.
type ExecOptions struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Pty, when set, runs the command on a guest pty (its output, stderr included,
	// then arrives on Stdout): keys such as ^C are bytes on Stdin that the guest's
	// line discipline turns into signals, as with ssh -t.
	Pty *PtyOptions
	// Signals are delivered to the command's process group until it exits. Without a
	// pty they go as `kill -s SIG -PGID` in a second session: OpenSSH's sshd refuses
	// SSH "signal" requests in root sessions (they need post-auth privilege separation,
	// which it skips for root), and lab logs in as root. The command line is then
	// prefixed with a line on stderr that tells Exec the group, which Exec strips.
	// With a pty they go as "signal" requests (a key such as ^C needs neither).
	Signals <-chan ssh.Signal
}

// PtyOptions describes the guest pty of ExecOptions.Pty.
type PtyOptions struct {
	Term          string // TERM in the guest ("" for xterm)
	Width, Height int
	Modes         ssh.TerminalModes
	// Resize delivers the local terminal's new sizes (SIGWINCH) to the guest pty.
	Resize <-chan WindowSize
}

// WindowSize is a terminal size in characters.
type WindowSize struct{ Width, Height int }

// Exec is Run with a guest pty and signal forwarding (lab exec); see ExecOptions.
func (c *Client) Exec(ctx context.Context, cmd string, o ExecOptions) (exit int, err error) {
	s, err := c.ssh.NewSession()
	if err != nil {
		return -1, fmt.Errorf("vm: new session: %w", err)
	}
	defer s.Close()
	s.Stdout, s.Stderr = o.Stdout, o.Stderr
	// Not s.Stdin: Session.Wait would wait for stdin's EOF even after the command exited.
	w, err := s.StdinPipe()
	if err != nil {
		return -1, fmt.Errorf("vm: %w", err)
	}
	var resize <-chan WindowSize
	var group *groupFinder
	if o.Signals != nil && o.Pty == nil {
		group = &groupFinder{w: o.Stderr, found: make(chan struct{})}
		s.Stderr = group
		// sshd runs the command in a new session with the login shell as its leader:
		// $$ is the group, and exec keeps it for the command.
		cmd = "printf '" + groupLinePrefix + "%d\\n' $$ >&2 && exec sh -c " + shell.Quote(cmd)
	}
	if p := o.Pty; p != nil {
		term := p.Term
		if term == "" {
			term = "xterm"
		}
		if err := s.RequestPty(term, p.Height, p.Width, p.Modes); err != nil {
			return -1, fmt.Errorf("vm: guest pty: %w", err)
		}
		resize = p.Resize
	}
	if err := s.Start(cmd); err != nil {
		return -1, fmt.Errorf("vm: starting %q: %w", cmd, err)
	}
	// Only after the exec request: an SSH server may close a session whose stdin
	// ends before it has a command (dropbear does).
	go func() {
		if o.Stdin != nil {
			io.Copy(w, o.Stdin)
		}
		w.Close()
	}()
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	for {
		select {
		case err = <-done:
			if group != nil {
				group.flush() // Wait has waited for the stderr copy
			}
			return exitStatus(err)
		case sig := <-o.Signals:
			if group == nil {
				s.Signal(sig) // an error means the session is ending; Wait says how
				continue
			}
			go c.killGroup(ctx, group, sig)
		case ws := <-resize:
			s.WindowChange(ws.Height, ws.Width)
		case <-ctx.Done():
			s.Signal(ssh.SIGKILL)
			if group != nil {
				kctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				c.killGroup(kctx, group, ssh.SIGKILL)
				cancel()
			}
			s.Close()
			<-done
			return -1, fmt.Errorf("vm: %q: %w", cmd, ctx.Err())
		}
	}
}

// groupLinePrefix starts the line Exec's wrapper writes on stderr: the command's group.
const groupLinePrefix = "lab-exec-pgid "

// groupFinder passes a command's stderr through, minus the first line when that is
// the wrapper's "lab-exec-pgid N".
type groupFinder struct {
	w     io.Writer // the real stderr (nil: discard)
	line  []byte    // the first line, until complete
	done  bool
	pgid  int
	found chan struct{} // closed once the first line is in (pgid 0: not found)
}

func (g *groupFinder) Write(p []byte) (int, error) {
	n := len(p)
	if !g.done {
		i := bytes.IndexByte(p, '\n')
		if i < 0 && len(g.line)+len(p) < 64 {
			g.line = append(g.line, p...)
			return n, nil
		}
		g.done = true
		rest := p
		if i >= 0 {
			g.line, rest = append(g.line, p[:i+1]...), p[i+1:]
		}
		if num, ok := strings.CutPrefix(string(g.line), groupLinePrefix); ok {
			if v, err := strconv.Atoi(strings.TrimSuffix(num, "\n")); err == nil && v > 1 {
				g.pgid, g.line = v, nil
			}
		}
		close(g.found)
		p = append(g.line, rest...)
		g.line = nil
	}
	if g.w == nil || len(p) == 0 {
		return n, nil
	}
	if _, err := g.w.Write(p); err != nil {
		return 0, err
	}
	return n, nil
}

// flush passes on a first line that never ended (the command exited first).
func (g *groupFinder) flush() {
	if g.done {
		return
	}
	g.done = true
	close(g.found)
	if g.w != nil && len(g.line) > 0 {
		g.w.Write(g.line)
	}
}

// killGroup sends sig to the command's process group from a second session, once the
// group is known.
func (c *Client) killGroup(ctx context.Context, g *groupFinder, sig ssh.Signal) {
	select {
	case <-g.found:
	case <-ctx.Done():
		return
	}
	if g.pgid == 0 {
		return
	}
	c.Run(ctx, fmt.Sprintf("kill -s %s -%d 2>/dev/null", sig, g.pgid), nil, nil, nil)
}

// exitStatus maps Session.Wait's error to an exit status.
func exitStatus(err error) (int, error) {
	if err == nil {
		return 0, nil
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		if sig := ee.Signal(); sig != "" {
			if n, ok := signalNumbers[ssh.Signal(sig)]; ok {
				return 128 + n, nil
			}
			return 128 + 9, nil
		}
		return ee.ExitStatus(), nil
	}
	return -1, fmt.Errorf("vm: %w", err)
}

var signalNumbers = map[ssh.Signal]int{
	ssh.SIGABRT: 6, ssh.SIGALRM: 14, ssh.SIGFPE: 8, ssh.SIGHUP: 1, ssh.SIGILL: 4, ssh.SIGINT: 2,
	ssh.SIGKILL: 9, ssh.SIGPIPE: 13, ssh.SIGQUIT: 3, ssh.SIGSEGV: 11, ssh.SIGTERM: 15, ssh.SIGUSR1: 10, ssh.SIGUSR2: 12,
}

// Output runs cmd and returns its stdout; a non-zero exit is an error carrying stderr.
func (c *Client) Output(ctx context.Context, cmd string) ([]byte, error) {
	var out, errb bytes.Buffer
	code, err := c.Run(ctx, cmd, nil, &out, &errb)
	if err != nil {
		return out.Bytes(), err
	}
	if code != 0 {
		return out.Bytes(), fmt.Errorf("vm: %q: exit status %d: %s", cmd, code, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}
