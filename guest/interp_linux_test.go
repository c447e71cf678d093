package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"lab/wire"
)

// The interpreter runs as a real process: this test binary re-executed
// with helperEnv set becomes lab-interop (argv exactly as binfmt_misc
// passes it), so stdio, signals, exit statuses and the terminal are the
// real ones.
const helperEnv = "LAB_GUEST_TEST_INTERP"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "1":
		os.Exit(Main(os.Args))
	case "sockcat", "sockcat-splice": // baselines of BenchmarkStdout: a plain socket to stdout
		c, err := net.Dial("unix", os.Args[1])
		if err != nil {
			os.Exit(1)
		}
		if os.Getenv(helperEnv) == "sockcat-splice" {
			io.Copy(os.Stdout, c) // os.File.ReadFrom splices socket -> pipe: no user-space copy
		} else {
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					os.Stdout.Write(buf[:n])
				}
				if err != nil {
					break
				}
			}
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const testToken = "s3cret-token"

// relayFunc scripts the host side of one launch after the handshake's
// first two messages were read.
type relayFunc func(t *testing.T, s *wire.Session, h *wire.Hello, l *wire.Launch)

// fixture is a temp dir with a config, a token, a fake PE and a relay.
type fixture struct {
	dir, config, exe, sock string
}

func newFixture(t testing.TB, extraConf string) *fixture {
	t.Helper()
	// Unix socket paths are limited to 108 bytes: keep the dir short.
	dir, err := os.MkdirTemp("", "lg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fixture{dir: dir, config: filepath.Join(dir, "interop.conf"), exe: filepath.Join(dir, "prog.exe"), sock: filepath.Join(dir, "r.sock")}
	write(t, filepath.Join(dir, "token"), testToken+"\n", 0o600)
	write(t, f.exe, "MZ\x90\x00fake pe", 0o755)
	write(t, f.config, fmt.Sprintf("relay = unix:%s\ntoken_file = %s\nconnect_timeout = 2s\nhandshake_timeout = 2s\n%s",
		f.sock, filepath.Join(dir, "token"), extraConf), 0o644)
	return f
}

func write(t testing.TB, name, data string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(name, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(name, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// serve accepts one connection on the fixture's socket and runs fn on it.
// It returns a channel closed when fn is done.
func (f *fixture) serve(t *testing.T, fn relayFunc) <-chan struct{} {
	t.Helper()
	return f.serveN(t, 1, func(_ int, s *wire.Session, h *wire.Hello, l *wire.Launch) { fn(t, s, h, l) })
}

// serveN is serve for n connections in turn, fn(i, ...) scripting the i-th (0-based);
// fewer than n connections by the test's end is an error.
func (f *fixture) serveN(t *testing.T, n int, fn func(i int, s *wire.Session, h *wire.Hello, l *wire.Launch)) <-chan struct{} {
	t.Helper()
	l, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		for i := range n {
			c, err := l.Accept()
			if err != nil {
				t.Errorf("relay: connection %d of %d: %v", i+1, n, err)
				return
			}
			s := wire.NewSession(c, wire.RoleHost)
			if h, l, err := readLaunch(s); err != nil {
				t.Errorf("relay: %v", err)
			} else {
				fn(i, s, h, l)
			}
			s.Close()
		}
	}()
	return done
}

// serveEach serves every connection to l, each in a goroutine of its own, until l is
// closed: fn runs once the Hello and Launch are read (a connection that breaks off
// before is dropped), then the session is closed. For benchmarks and retries, where a
// connection is no test's failure by itself.
func serveEach(l net.Listener, fn func(s *wire.Session)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			s := wire.NewSession(c, wire.RoleHost)
			defer s.Close()
			if _, _, err := readLaunch(s); err == nil {
				fn(s)
			}
		}()
	}
}

// readLaunch reads what the interpreter sends first: its Hello, then the Launch.
func readLaunch(s *wire.Session) (*wire.Hello, *wire.Launch, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m1, err := s.Recv(ctx)
	if err != nil {
		return nil, nil, err
	}
	m2, err := s.Recv(ctx)
	if err != nil {
		return nil, nil, err
	}
	h, ok1 := m1.(*wire.Hello)
	l, ok2 := m2.(*wire.Launch)
	if !ok1 || !ok2 {
		return nil, nil, fmt.Errorf("got %T, %T; want Hello, Launch", m1, m2)
	}
	return h, l, nil
}

// finish ends a launch as the relay does once the program is done: both output
// streams closed, then the exit status.
func finish(s *wire.Session, e wire.Exit) {
	s.Writer(wire.Stdout).CloseWrite()
	s.Writer(wire.Stderr).CloseWrite()
	s.Send(&e)
}

// serveLaunch serves one launch whose program exits 0 at once, and returns the Launch
// the relay got, to read once done is closed.
func (f *fixture) serveLaunch(t *testing.T) (got *wire.Launch, done <-chan struct{}) {
	t.Helper()
	got = new(wire.Launch)
	done = f.serve(t, func(t *testing.T, s *wire.Session, h *wire.Hello, l *wire.Launch) {
		*got = *l
		accept(t, s)
		finish(s, wire.Exit{})
	})
	return got, done
}

// accept replies Hello + started.
func accept(t *testing.T, s *wire.Session) {
	if err := s.Send(wire.NewHello(nil), &wire.LaunchResult{}); err != nil {
		t.Errorf("relay: %v", err)
	}
}

type result struct {
	stdout, stderr string
	code           int
}

// interpCmd prepares the interpreter as binfmt_misc would start it for
// execve(file, argv).
func (f *fixture) interpCmd(t *testing.T, file string, argv ...string) *exec.Cmd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, os.Args[0], append([]string{file}, argv...)...)
	cmd.Env = append(os.Environ(), helperEnv+"=1", ConfigEnv+"="+f.config)
	cmd.Dir = f.dir
	return cmd
}

func run(t *testing.T, cmd *exec.Cmd, stdin io.Reader) result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

func TestInterpStreamsAndExit(t *testing.T) {
	f := newFixture(t, "")
	var got *wire.Launch
	var gotToken string
	done := f.serve(t, func(t *testing.T, s *wire.Session, h *wire.Hello, l *wire.Launch) {
		got, gotToken = l, string(h.Token)
		accept(t, s)
		// Echo stdin upper-cased on stdout, after its EOF; one line on stderr.
		in, err := io.ReadAll(s.Reader(wire.Stdin))
		if err != nil {
			t.Errorf("relay stdin: %v", err)
		}
		io.WriteString(s.Writer(wire.Stderr), "to stderr\n")
		s.Writer(wire.Stdout).Write(bytes.ToUpper(in))
		finish(s, wire.Exit{Code: 0x2A03}) // only the low byte reaches the guest's shell
	})
	cmd := f.interpCmd(t, f.exe, f.exe, "arg 1", "")
	cmd.Env = append(cmd.Env, "LABENV=WINPATH/p:GONE", "WINPATH=/mnt/c/x")
	r := run(t, cmd, strings.NewReader("hello\nworld\n"))
	<-done
	if r.code != 3 || r.stdout != "HELLO\nWORLD\n" || r.stderr != "to stderr\n" {
		t.Fatalf("got %+v", r)
	}
	if gotToken != testToken {
		t.Errorf("token %q", gotToken)
	}
	want := &wire.Launch{
		Format: wire.FormatPE, Path: mustEval(t, f.exe), Argv: []string{"prog.exe", "arg 1", ""}, Cwd: mustEval(t, f.dir),
		Env: []wire.EnvVar{
			{Name: "LABENV", Value: "WINPATH/p:GONE"},
			{Name: "WINPATH", Value: "/mnt/c/x", Flags: wire.EnvPath},
			{Name: "GONE", Flags: wire.EnvUnset},
		},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("launch\n got %+v\nwant %+v", got, want)
	}
}

func mustEval(t *testing.T, p string) string {
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A relative path and a symlink in the guest reach the relay resolved.
func TestInterpResolvesPath(t *testing.T) {
	f := newFixture(t, "")
	link := filepath.Join(f.dir, "link.exe")
	if err := os.Symlink(f.exe, link); err != nil {
		t.Fatal(err)
	}
	got, done := f.serveLaunch(t)
	r := run(t, f.interpCmd(t, "./link.exe", "./link.exe"), nil)
	<-done
	if r.code != 0 || got.Path != mustEval(t, f.exe) || got.Argv[0] != "link.exe" {
		t.Fatalf("%+v, launch %+v", r, got)
	}
}

func TestInterpHostStub(t *testing.T) {
	f := newFixture(t, "")
	stub, _ := wire.FormatStub("notify-send")
	write(t, filepath.Join(f.dir, "notify-send"), string(stub), 0o755)
	got, done := f.serveLaunch(t)
	stubPath := filepath.Join(f.dir, "notify-send")
	r := run(t, f.interpCmd(t, stubPath, "notify-send", "hi"), nil)
	<-done
	if r.code != 0 || got.Format != wire.FormatHost || got.Path != "notify-send" || fmt.Sprint(got.Argv) != "[notify-send hi]" {
		t.Fatalf("%+v, launch %+v", r, got)
	}
}

func TestInterpExitStatuses(t *testing.T) {
	for _, tc := range []struct {
		exit wire.Exit
		want int
	}{
		{wire.Exit{}, 0},
		{wire.Exit{Code: 1}, 1},
		{wire.Exit{Code: 0xC0000005}, 5},
		{wire.Exit{Signal: 9}, 137},
		{wire.Exit{Signal: 15}, 143},
	} {
		t.Run(fmt.Sprint(tc.want), func(t *testing.T) {
			f := newFixture(t, "")
			done := f.serve(t, func(t *testing.T, s *wire.Session, h *wire.Hello, l *wire.Launch) {
				accept(t, s)
				finish(s, tc.exit)
			})
			r := run(t, f.interpCmd(t, f.exe, f.exe), nil)
			<-done
			if r.code != tc.want || r.stderr != "" {
				t.Fatalf("got %+v, want exit %d", r, tc.want)
			}
		})
	}
}

func TestInterpRefused(t *testing.T) {
	for _, tc := range []struct {
		res  wire.LaunchResult
		code int
		line string
	}{
		{wire.LaunchResult{Errno: wire.ENOENT, Message: "lab relay: /x/prog.exe: no such file on the host"}, 127, "lab-interop: lab relay: /x/prog.exe: no such file on the host (relay at unix:"},
		{wire.LaunchResult{Errno: wire.EPERM, Message: "lab relay: /x/prog.exe: not inside a share"}, 126, "lab-interop: lab relay: /x/prog.exe: not inside a share (relay at unix:"},
		{wire.LaunchResult{Errno: wire.EACCES}, 126, "prog.exe: permission denied (relay at unix:"},
		{wire.LaunchResult{Errno: wire.EACCES, Message: "two\nlines\x1b[31m"}, 126, "lab-interop: two lines [31m (relay at unix:"},
	} {
		t.Run(fmt.Sprint(tc.res.Errno), func(t *testing.T) {
			f := newFixture(t, "")
			done := f.serve(t, func(t *testing.T, s *wire.Session, h *wire.Hello, l *wire.Launch) {
				res := tc.res
				s.Send(wire.NewHello(nil), &res)
			})
			r := run(t, f.interpCmd(t, f.exe, f.exe), nil)
			<-done
			checkOneLine(t, r, tc.code, tc.line)
		})
	}
}

// checkOneLine: the interpreter failed with code and printed exactly one
// line containing want.
func checkOneLine(t *testing.T, r result, code int, want ...string) {
	t.Helper()
	if r.code != code || strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "lab-interop: ") {
		t.Fatalf("got %+v; want exit %d and one line", r, code)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Fatalf("stderr %q does not contain %q", r.stderr, w)
		}
	}
}

func TestInterpRelayGone(t *testing.T) {
	f := newFixture(t, "")
	done := f.serve(t, func(t *testing.T, s *wire.Session, h *wire.Hello, l *wire.Launch) {
		accept(t, s)
		io.WriteString(s.Writer(wire.Stdout), "partial output\n")
		s.Conn().Close() // the relay dies mid-run
	})
	r := run(t, f.interpCmd(t, f.exe, f.exe), nil)
	<-done
	if r.stdout != "partial output\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	checkOneLine(t, r, 126, "unix:"+f.sock, "closed the connection before the program exited")
}

func TestInterpNoRelay(t *testing.T) {
	t.Run("no socket", func(t *testing.T) {
		f := newFixture(t, "")
		r := run(t, f.interpCmd(t, f.exe, f.exe), nil)
		checkOneLine(t, r, 126, "cannot reach the relay at unix:"+f.sock, "no such file or directory")
	})
	t.Run("dead socket", func(t *testing.T) {
		f := newFixture(t, "")
		l, err := net.Listen("unix", f.sock)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close() // the socket file stays, nobody listens
		r := run(t, f.interpCmd(t, f.exe, f.exe), nil)
		checkOneLine(t, r, 126, "cannot reach the relay at unix:"+f.sock, "connection refused")
	})
	t.Run("silent relay", func(t *testing.T) {
		// Accepts (the kernel does, from the backlog) and never answers:
		// the handshake deadline ends it.
		f := newFixture(t, "handshake_timeout = 300ms\n")
		l, err := net.Listen("unix", f.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		r := run(t, f.interpCmd(t, f.exe, f.exe), nil)
		checkOneLine(t, r, 126, "unix:"+f.sock, "did not answer within 300ms")
	})
	t.Run("vsock", func(t *testing.T) {
		f := newFixture(t, "relay = vsock:2:5555\nconnect_timeout = 300ms\n")
		r := run(t, f.interpCmd(t, f.exe, f.exe), nil)
		checkOneLine(t, r, 126, "cannot reach the relay at vsock:2:5555")
	})
	t.Run("relay hangs up", func(t *testing.T) {
		f := newFixture(t, "")
		done := f.serve(t, func(t *testing.T, s *wire.Session, h *wire.Hello, l *wire.Launch) {})
		r := run(t, f.interpCmd(t, f.exe, f.exe), nil)
		<-done
		checkOneLine(t, r, 126, "closed the connection during the handshake")
	})
	t.Run("version mismatch", func(t *testing.T) {
		f := newFixture(t, "")
		done := f.serve(t, func(t *testing.T, s *wire.Session, h *wire.Hello, l *wire.Launch) {
			s.Send(&wire.Hello{Major: 9})
		})
		r := run(t, f.interpCmd(t, f.exe, f.exe), nil)
		<-done
		checkOneLine(t, r, 126, fmt.Sprintf("peer speaks 9.0, this side speaks %d.%d", wire.Major, wire.Minor))
	})
}

func TestInterpLocalErrors(t *testing.T) {
	f := newFixture(t, "")
	write(t, filepath.Join(f.dir, "script"), "#!/bin/sh\n", 0o755)
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		code int
		want []string
	}{
		{"missing file", []string{filepath.Join(f.dir, "nope.exe"), "nope.exe"}, nil, 127, []string{"nope.exe: no such file or directory"}},
		{"unknown format", []string{filepath.Join(f.dir, "script"), "script"}, nil, 126, []string{"unknown executable format", f.config}},
		{"not binfmt", []string{f.exe}, nil, 126, []string{"binfmt_misc"}},
		{"no config", []string{f.exe, f.exe}, []string{ConfigEnv + "=" + filepath.Join(f.dir, "none.conf")}, 126, []string{"interop is not configured", "none.conf"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := f.interpCmd(t, tc.args[0], tc.args[1:]...)
			cmd.Env = append(cmd.Env, tc.env...)
			checkOneLine(t, run(t, cmd, nil), tc.code, tc.want...)
		})
	}
}

func TestInterpForwardsSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT} {
		t.Run(sig.String(), func(t *testing.T) {
			f := newFixture(t, "")
			done := f.serve(t, func(t *testing.T, s *wire.Session, h *wire.Hello, l *wire.Launch) {
				accept(t, s)
				io.WriteString(s.Writer(wire.Stdout), "ready\n")
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				m, err := s.Recv(ctx)
				if err != nil {
					t.Errorf("relay: %v", err)
					return
				}
				got, ok := m.(*wire.Signal)
				if !ok || syscall.Signal(got.Signo) != sig {
					t.Errorf("relay got %#v, want signal %d", m, sig)
				}
				finish(s, wire.Exit{Signal: got.Signo})
			})
			cmd := f.interpCmd(t, f.exe, f.exe)
			var errb bytes.Buffer
			cmd.Stderr = &errb
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			pr, pw, err := os.Pipe() // stdin stays open: the program "runs"
			if err != nil {
				t.Fatal(err)
			}
			defer pw.Close()
			cmd.Stdin = pr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pr.Close()
			// The interpreter copies stdout only once its signal
			// handlers are in place: "ready" on stdout means signals
			// will be forwarded.
			buf := make([]byte, 6)
			if _, err := io.ReadFull(stdout, buf); err != nil || string(buf) != "ready\n" {
				t.Fatalf("read %q, %v", buf, err)
			}
			cmd.Process.Signal(sig)
			io.Copy(io.Discard, stdout)
			err = cmd.Wait()
			<-done
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 128+int(sig) {
				t.Fatalf("exit %v, stderr %q; want %d", err, errb.String(), 128+int(sig))
			}
		})
	}
}

// A terminating signal that arrives before the relay's answer ends the interpreter as it
// would a process without a handler (it dies of the signal), although the interpreter
// already catches the forwarded signals then (they are registered while it waits for the
// relay's answer): a ^C during a slow handshake is not swallowed or held.
func TestInterpSignalBeforeLaunch(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			f := newFixture(t, "handshake_timeout = 20s\n")
			got := make(chan struct{})
			release := make(chan struct{})
			defer close(release)
			f.serve(t, func(t *testing.T, s *wire.Session, h *wire.Hello, l *wire.Launch) {
				close(got)
				<-release // never answers
			})
			cmd := f.interpCmd(t, f.exe, f.exe)
			var errb bytes.Buffer
			cmd.Stderr = &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			<-got
			// Not for the outcome (the same either way) but so that the signal usually
			// finds the handlers in place and tests the path that re-raises it.
			time.Sleep(200 * time.Millisecond)
			cmd.Process.Signal(sig)
			err := cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("wait: %v", err)
			}
			ws := ee.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != sig {
				t.Fatalf("interpreter ended with %v, stderr %q; want killed by %v", err, errb.String(), sig)
			}
		})
	}
}

// `prog | head -1`: when the guest's stdout is closed the relay is told
// to stop the stream (and the host program would get EPIPE).
func TestInterpClosedStdout(t *testing.T) {
	f := newFixture(t, "")
	done := f.serve(t, func(t *testing.T, s *wire.Session, h *wire.Hello, l *wire.Launch) {
		accept(t, s)
		line := bytes.Repeat([]byte("y\n"), 4096)
		for {
			if _, err := s.Writer(wire.Stdout).Write(line); err != nil {
				if !errors.Is(err, wire.ErrStreamClosed) {
					t.Errorf("relay write: %v, want ErrStreamClosed", err)
				}
				break
			}
		}
		finish(s, wire.Exit{Signal: uint8(syscall.SIGPIPE)})
	})
	cmd := f.interpCmd(t, f.exe, f.exe)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = pw
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	buf := make([]byte, 2)
	if _, err := io.ReadFull(pr, buf); err != nil || string(buf) != "y\n" {
		t.Fatalf("read %q, %v", buf, err)
	}
	pr.Close() // head -1 exits
	err = cmd.Wait()
	<-done
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 141 {
		t.Fatalf("exit %v, stderr %q; want 141", err, errb.String())
	}
}

// Large streams in both directions at once, byte-exact (no deadlock when
// neither side reads until it has written everything).
func TestInterpBulk(t *testing.T) {
	f := newFixture(t, "")
	const size = 8 << 20
	done := f.serve(t, func(t *testing.T, s *wire.Session, h *wire.Hello, l *wire.Launch) {
		accept(t, s)
		errc := make(chan error, 1)
		go func() {
			_, err := io.Copy(s.Writer(wire.Stdout), s.Reader(wire.Stdin)) // cat
			s.Writer(wire.Stdout).CloseWrite()
			errc <- err
		}()
		s.Writer(wire.Stderr).Write(bytes.Repeat([]byte("e"), size))
		s.Writer(wire.Stderr).CloseWrite()
		if err := <-errc; err != nil {
			t.Errorf("relay cat: %v", err)
		}
		s.Send(&wire.Exit{})
	})
	in := make([]byte, size)
	for i := range in {
		in[i] = byte(i * 7)
	}
	r := run(t, f.interpCmd(t, f.exe, f.exe), bytes.NewReader(in))
	<-done
	if r.code != 0 || r.stdout != string(in) || r.stderr != strings.Repeat("e", size) {
		t.Fatalf("exit %d, stdout %d bytes (equal %v), stderr %d bytes", r.code, len(r.stdout), r.stdout == string(in), len(r.stderr))
	}
}

// TestInterpRelayProtocolError: a relay that ends the session over a protocol error says
// why (a SessionError frame); the interpreter prints it as one line and exits 126.
func TestInterpRelayProtocolError(t *testing.T) {
	f := newFixture(t, "")
	done := f.serve(t, func(t *testing.T, s *wire.Session, h *wire.Hello, l *wire.Launch) {
		accept(t, s)
		io.WriteString(s.Writer(wire.Stdout), "partial output\n")
		// What a relay's session sends when the guest breaks the protocol.
		b, _ := wire.AppendMessage(nil, &wire.SessionError{Message: "protocol error: peer overran the stdin window"})
		s.Conn().Write(b)
		s.Conn().Close()
	})
	r := run(t, f.interpCmd(t, f.exe, f.exe), nil)
	<-done
	if want := "lab-interop: relay: protocol error: peer overran the stdin window\n"; r.code != 126 || r.stdout != "partial output\n" || r.stderr != want {
		t.Errorf("got %+v; want exit 126, the partial output and stderr %q", r, want)
	}
}

// A relay over its pre-authentication budget answers EAGAIN before anything runs: the
// interpreter connects again and the launch succeeds.
func TestInterpRetriesEAGAIN(t *testing.T) {
	f := newFixture(t, "")
	busy := wire.LaunchResult{Errno: wire.EAGAIN, Message: "lab relay: too many connections are waiting to authenticate (host limit 64); try again"}
	f.serveN(t, 4, func(i int, s *wire.Session, _ *wire.Hello, _ *wire.Launch) {
		if i < 3 {
			s.Send(wire.NewHello(nil), &busy)
			return
		}
		accept(t, s)
		io.WriteString(s.Writer(wire.Stdout), "ran\n")
		finish(s, wire.Exit{Code: 3})
		s.Recv(context.Background()) // until the interpreter closes
	})
	r := run(t, f.interpCmd(t, f.exe, f.exe), nil)
	if r.code != 3 || r.stdout != "ran\n" || r.stderr != "" {
		t.Errorf("got %+v; want exit 3, stdout \"ran\\n\", no stderr", r)
	}
}

// Within the connect timeout only: then the relay's line, with the attempts.
func TestInterpRetriesEAGAINGivesUp(t *testing.T) {
	f := newFixture(t, "connect_timeout = 300ms\n")
	busy := wire.LaunchResult{Errno: wire.EAGAIN, Message: "lab relay: out of resources on the host; try again"}
	var n atomic.Int32
	l, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go serveEach(l, func(s *wire.Session) {
		n.Add(1)
		s.Send(wire.NewHello(nil), &busy)
	})
	r := run(t, f.interpCmd(t, f.exe, f.exe), nil)
	checkOneLine(t, r, 126, fmt.Sprintf("lab-interop: lab relay: out of resources on the host; try again (%d attempts in 300ms) (relay at unix:%s)\n", n.Load(), f.sock))
	if n.Load() < 2 {
		t.Errorf("%d attempts; want at least 2 within 300ms", n.Load())
	}
}

func TestRetryWait(t *testing.T) {
	for _, tc := range []struct {
		n      int
		lo, hi time.Duration
	}{
		{1, 5 * time.Millisecond, 10 * time.Millisecond},
		{2, 10 * time.Millisecond, 20 * time.Millisecond},
		{5, 80 * time.Millisecond, 160 * time.Millisecond},
		{8, 500 * time.Millisecond, time.Second},
		{100, 500 * time.Millisecond, time.Second},
	} {
		lo := retryWait(tc.n, func(int64) int64 { return 0 })
		hi := retryWait(tc.n, func(n int64) int64 { return n - 1 })
		if lo != tc.lo || hi != tc.hi {
			t.Errorf("retryWait(%d) in [%v, %v]; want [%v, %v]", tc.n, lo, hi, tc.lo, tc.hi)
		}
	}
}

// The working directory goes out as the kernel's (getcwd), not as $PWD's logical path through
// a guest symlink, which the host cannot follow (and which cost two stats over 9p).
func TestInterpCwdPhysical(t *testing.T) {
	f := newFixture(t, "")
	real := filepath.Join(f.dir, "real")
	link := filepath.Join(f.dir, "link")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	got, done := f.serveLaunch(t)
	cmd := f.interpCmd(t, f.exe, f.exe)
	cmd.Dir = link
	cmd.Env = append(cmd.Env, "PWD="+link) // as a shell that did `cd link` sets it
	r := run(t, cmd, nil)
	<-done
	if r.code != 0 || got.Cwd != mustEval(t, real) {
		t.Fatalf("%+v, cwd %q, want %q", r, got.Cwd, mustEval(t, real))
	}
}

// openPath names the file that was opened, symlinks resolved, even when the symlink that
// led to it points elsewhere by the time the path is sent.
func TestOpenPath(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, b, link := filepath.Join(dir, "a.exe"), filepath.Join(dir, "b.exe"), filepath.Join(dir, "link.exe")
	write(t, a, "MZa", 0o755)
	write(t, b, "MZb", 0o755)
	if err := os.Symlink(a, link); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(link)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(b, link); err != nil {
		t.Fatal(err)
	}
	if got := openPath(f); got != a {
		t.Errorf("openPath = %q, want %q", got, a)
	}
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	if got := openPath(f); got != "" {
		t.Errorf("openPath of a deleted file = %q, want \"\"", got)
	}
}

// readHead reads the descriptor binfmt_misc passed (flag O) when there is one, not the
// file by its name, names the file from the descriptor and leaves it open (the
// interpreter closes it once the program runs); without one it opens the name.
func TestReadHeadExecFD(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a := filepath.Join(dir, "a.exe")
	write(t, a, "MZ passed open", 0o755)
	f, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(dir, "gone.exe") // the name is not opened
	head, real, err := readHead(gone, fd)
	if err != nil || string(head) != "MZ passed open" || real != a {
		t.Errorf("readHead(%q, fd) = %q, %q, %v; want the passed file's head and path %q", gone, head, real, err, a)
	}
	if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0); e != 0 {
		t.Errorf("the passed descriptor was closed by readHead (fcntl: %v)", e)
	}
	syscall.Close(fd)
	if _, _, err := readHead(gone, -1); err != syscall.ENOENT {
		t.Errorf("readHead(%q, -1) error %v, want %v", gone, err, syscall.ENOENT)
	}
	// A test binary is not started by binfmt_misc: no descriptor passed.
	if fd := binfmtExecFD(); fd != -1 {
		t.Errorf("binfmtExecFD() = %d in a process binfmt_misc did not start, want -1", fd)
	}
}

// The interpreter drops to one P only once its streams have moved bulkBytes, and once.
func TestBulkSwitch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []int
		want   int
	}{
		{"nothing", nil, 0},
		{"a few bytes", []int{1, 100, 0, -1}, 0},
		{"just under", []int{bulkBytes/2 - 1, bulkBytes / 2}, 0},
		{"reached", []int{bulkBytes / 2, bulkBytes / 2}, 1},
		{"far past", []int{bulkBytes, bulkBytes, bulkBytes, 1}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			b := &bulkSwitch{set: func() { calls++ }}
			for _, n := range tc.writes {
				b.add(n)
			}
			if calls != tc.want {
				t.Errorf("set called %d times, want %d", calls, tc.want)
			}
		})
	}
	var none *bulkSwitch
	none.add(bulkBytes) // a nil switch does nothing
}
