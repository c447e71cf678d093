package host_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/vsock"

	"lab/host"
	"lab/internal/labtest"
	"lab/wire"
)

var testToken = []byte("0123456789abcdef-test-token")

// inproc is a relay served in this process on a Unix socket, with one share whose guest
// path differs from its host path.
type inproc struct {
	relay *host.Relay
	sock  string
	share string // host directory of the share (fixtures in share/bin)
	guest string // the share's guest path
}

func startInproc(t *testing.T, mod func(*host.Config), wrap func(net.Listener) net.Listener) *inproc {
	t.Helper()
	share := t.TempDir()
	linkFixtures(t, filepath.Join(share, "bin"))
	sockDir, err := os.MkdirTemp("", "lr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "relay.sock")
	cfg := host.Config{
		Token:       testToken,
		Shares:      []host.Share{{HostPath: share, GuestPath: "/mnt/host"}},
		Allow:       []host.Exposed{{Name: "hostecho", HostPath: filepath.Join(share, "bin", "echoargs")}},
		FallbackDir: "/",
		Logger:      slog.New(slog.NewTextHandler(labtest.Log(t), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := host.NewRelay(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := host.Listen("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		l = wrap(l)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &inproc{relay: r, sock: sock, share: share, guest: "/mnt/host"}
}

// result is what a guest gets back from one launch.
type result struct {
	launch         wire.LaunchResult
	exit           *wire.Exit
	stdout, stderr []byte
	err            error
}

// guestRun is a minimal guest: it sends Hello and Launch, stdin, and collects everything.
func guestRun(t *testing.T, sock string, token []byte, l *wire.Launch, stdin io.Reader) result {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	return guestRunConn(conn, token, l, stdin)
}

func guestRunConn(conn net.Conn, token []byte, l *wire.Launch, stdin io.Reader) result {
	s := wire.NewSession(conn, wire.RoleGuest)
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var res result
	if err := s.Send(wire.NewHello(token), l); err != nil {
		res.err = err
		return res
	}
	for range 2 {
		m, err := s.Recv(ctx)
		if err != nil {
			res.err = err
			return res
		}
		if lr, ok := m.(*wire.LaunchResult); ok {
			res.launch = *lr
		}
	}
	if res.launch.Errno != 0 {
		return res
	}
	go func() {
		if stdin != nil {
			io.Copy(s.Writer(wire.Stdin), stdin)
		}
		s.Writer(wire.Stdin).CloseWrite()
	}()
	var wg sync.WaitGroup
	var outb, errb bytes.Buffer
	wg.Add(2)
	go func() { defer wg.Done(); io.Copy(&outb, s.Reader(wire.Stdout)) }()
	go func() { defer wg.Done(); io.Copy(&errb, s.Reader(wire.Stderr)) }()
	wg.Wait()
	m, err := s.Recv(ctx)
	if err != nil {
		res.err = err
		return res
	}
	res.exit, _ = m.(*wire.Exit)
	res.stdout, res.stderr = outb.Bytes(), errb.Bytes()
	return res
}

func launchOf(path string, args ...string) *wire.Launch {
	return &wire.Launch{Format: wire.FormatPE, Path: path, Argv: append([]string{filepath.Base(path)}, args...), Cwd: "/mnt/host"}
}

func TestRelayRunsProgram(t *testing.T) {
	ip := startInproc(t, nil, nil)
	l := launchOf("/mnt/host/bin/echoargs", "a b", "", "ü€ \"q\" 'x'")
	l.Cwd = "/mnt/host/bin"
	l.Env = []wire.EnvVar{{Name: "LABENV", Value: "P/p:X"}, {Name: "P", Value: "/mnt/host/bin/x", Flags: wire.EnvPath}, {Name: "X", Value: "1"}, {Name: "NOT", Value: "2"}}
	res := guestRun(t, ip.sock, testToken, l, nil)
	if res.err != nil || res.launch.Errno != 0 || res.exit == nil || res.exit.Status() != 0 {
		t.Fatalf("launch: %+v (stderr %q)", res, res.stderr)
	}
	var got struct {
		Args []string
		Cwd  string
		Env  []string
	}
	if err := json.Unmarshal(res.stdout, &got); err != nil {
		t.Fatalf("%v: %q", err, res.stdout)
	}
	share, _ := filepath.EvalSymlinks(ip.share)
	if want := l.Argv; !slices.Equal(got.Args, want) {
		t.Errorf("args %q, want %q", got.Args, want)
	}
	if got.Cwd != filepath.Join(share, "bin") {
		t.Errorf("cwd %q, want %q", got.Cwd, filepath.Join(share, "bin"))
	}
	env := strings.Join(got.Env, "\n")
	for _, want := range []string{"LABENV=P/p:X", "P=" + share + "/bin/x", "X=1"} {
		if !strings.Contains(env, want+"\n") && !strings.HasSuffix(env, want) {
			t.Errorf("env lacks %q", want)
		}
	}
	if strings.Contains(env, "NOT=2") {
		t.Error("a variable LABENV does not name crossed")
	}
	if len(res.stderr) != 0 {
		t.Errorf("stderr %q", res.stderr)
	}
}

func TestRelayExposedCommand(t *testing.T) {
	ip := startInproc(t, nil, nil)
	res := guestRun(t, ip.sock, testToken, &wire.Launch{Format: wire.FormatHost, Path: "hostecho", Argv: []string{"hostecho", "x"}, Cwd: "/root"}, nil)
	if res.err != nil || res.launch.Errno != 0 || res.exit == nil || res.exit.Status() != 0 {
		t.Fatalf("launch: %+v", res)
	}
	if !bytes.Contains(res.stdout, []byte(`"args":["hostecho","x"]`)) {
		t.Errorf("stdout %q", res.stdout)
	}
	if len(res.stderr) != 0 {
		t.Errorf("stderr %q, want none: the cwd fallback is only logged unless the launch asks", res.stderr)
	}
	res = guestRun(t, ip.sock, testToken, &wire.Launch{Format: wire.FormatHost, Path: "hostecho", Argv: []string{"hostecho", "x"}, Cwd: "/root", Flags: wire.LaunchCwdWarning}, nil)
	if !bytes.HasPrefix(res.stderr, []byte("lab: warning: the working directory /root is not in a shared folder; the host program runs in /\n")) {
		t.Errorf("stderr %q, want the cwd warning (LaunchCwdWarning)", res.stderr)
	}
	res = guestRun(t, ip.sock, testToken, &wire.Launch{Format: wire.FormatHost, Path: "sh", Argv: []string{"sh"}, Cwd: "/"}, nil)
	if res.launch.Errno != wire.EPERM {
		t.Errorf("unexposed command: %+v", res)
	}
}

// cidListener makes every connection look like a vsock connection from cid.
type cidListener struct {
	net.Listener
	cid uint32
}

func (l cidListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return cidConn{c, l.cid}, nil
}

type cidConn struct {
	net.Conn
	cid uint32
}

func (c cidConn) RemoteAddr() net.Addr { return &vsock.Addr{ContextID: c.cid, Port: 1234} }

func TestRelayPeerCID(t *testing.T) {
	for _, tt := range []struct {
		cid  uint32
		want wire.Errno
	}{{3, 0}, {4, wire.EACCES}} {
		ip := startInproc(t, func(c *host.Config) { c.PeerCID = 3 }, func(l net.Listener) net.Listener { return cidListener{l, tt.cid} })
		res := guestRun(t, ip.sock, testToken, launchOf("/mnt/host/bin/true"), nil)
		if res.launch.Errno != tt.want {
			t.Errorf("peer CID %d: %+v, want errno %d", tt.cid, res, tt.want)
		}
	}
}

// TestRelayRefusals sends bad and hostile requests while a long session runs, and checks
// each gets its error reply and the long session completes.
func TestRelayRefusals(t *testing.T) {
	ip := startInproc(t, func(c *host.Config) { c.HandshakeTimeout = time.Second }, nil)
	os.Symlink("/bin/true", filepath.Join(ip.share, "bin", "escape"))

	// The parallel session: cat of 8 MiB, fed slowly enough to overlap the refusals.
	pr, pw := io.Pipe()
	parallel := make(chan result, 1)
	go func() { parallel <- guestRun(t, ip.sock, testToken, launchOf("/mnt/host/bin/sha256"), pr) }()
	go func() {
		chunk := bytes.Repeat([]byte("x"), 1<<20)
		for range 8 {
			pw.Write(chunk)
			time.Sleep(20 * time.Millisecond)
		}
		pw.Close()
	}()

	hello := func(token []byte) []byte { b, _ := wire.AppendMessage(nil, wire.NewHello(token)); return b }
	launch := func(l *wire.Launch) []byte { b, _ := wire.AppendMessage(nil, l); return b }
	oversize := binary.BigEndian.AppendUint32(nil, wire.MaxFrame+100)
	oversize = append(oversize, byte(wire.TypeLaunch))
	badMajor := hello(testToken)
	binary.BigEndian.PutUint16(badMajor[wire.HeaderSize+4:], wire.Major+1)
	cases := []struct {
		name string
		send []byte
		want wire.Errno
	}{
		{"bad token", append(hello([]byte("wrong-token-wrong-token")), launch(launchOf("/mnt/host/bin/true"))...), wire.EACCES},
		{"empty token", append(hello(nil), launch(launchOf("/mnt/host/bin/true"))...), wire.EACCES},
		{"dotdot", append(hello(testToken), launch(launchOf("/mnt/host/bin/../bin/true"))...), wire.EPERM},
		{"symlink escape", append(hello(testToken), launch(launchOf("/mnt/host/bin/escape"))...), wire.EPERM},
		{"outside shares", append(hello(testToken), launch(launchOf("/bin/true"))...), wire.EPERM},
		{"missing", append(hello(testToken), launch(launchOf("/mnt/host/bin/nothere"))...), wire.ENOENT},
		{"oversize frame", append(hello(testToken), oversize...), wire.E2BIG},
		{"oversize first frame", oversize, wire.E2BIG},
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), wire.EPROTO},
		{"garbage frame", []byte{0, 0, 0, 9, byte(wire.TypeHello), 'N', 'O', 'P', 'E', 0, 1, 0, 0}, wire.EPROTO},
		{"other major", badMajor, wire.EPROTO},
		{"launch first", launch(launchOf("/mnt/host/bin/true")), wire.EINVAL},
		{"truncated", append(hello(testToken), 0, 0, 1), wire.EINVAL},
		{"silence", nil, wire.EAGAIN}, // the handshake deadline: nothing ran, a slow interpreter tries again
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("unix", ip.sock)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write(tt.send)
			if tt.name == "truncated" {
				conn.(*net.UnixConn).CloseWrite()
			}
			buf := make([]byte, wire.MaxPayload)
			conn.SetDeadline(time.Now().Add(30 * time.Second))
			m, err := wire.ReadMessage(conn, buf)
			if err != nil {
				t.Fatalf("no reply: %v", err)
			}
			if _, ok := m.(*wire.Hello); !ok {
				t.Fatalf("first reply %T, want a Hello", m)
			}
			m, err = wire.ReadMessage(conn, buf)
			if err != nil {
				t.Fatalf("no launch result: %v", err)
			}
			lr, ok := m.(*wire.LaunchResult)
			if !ok || lr.Errno != tt.want || lr.Message == "" || strings.Contains(lr.Message, "\n") {
				t.Fatalf("reply %+v, want errno %d with a one-line message", m, tt.want)
			}
			t.Logf("reply: errno %d %q", lr.Errno, lr.Message)
			if _, err := wire.ReadMessage(conn, buf); !errors.Is(err, io.EOF) {
				t.Errorf("after a refusal the relay should close; read gave %v", err)
			}
		})
	}
	res := <-parallel
	if res.err != nil || res.exit == nil || res.exit.Status() != 0 || !bytes.HasSuffix(bytes.TrimSpace(res.stdout), []byte(" 8388608")) {
		t.Errorf("the parallel session: %+v stdout %q", res, res.stdout)
	}
	st := ip.relay.Stats()
	if st.Refused < uint64(len(cases)) || st.Launched != 1 || st.BytesIn != 8<<20 {
		t.Errorf("stats %+v", st)
	}
}

func TestRelayDisconnectKillsGroup(t *testing.T) {
	ip := startInproc(t, nil, nil)
	pidFile := filepath.Join(ip.share, "pids")
	conn, err := net.Dial("unix", ip.sock)
	if err != nil {
		t.Fatal(err)
	}
	s := wire.NewSession(conn, wire.RoleGuest)
	s.Send(wire.NewHello(testToken), launchOf("/mnt/host/bin/sleeper", pidFile))
	ctx := context.Background()
	s.Recv(ctx)
	if m, _ := s.Recv(ctx); m == nil || m.(*wire.LaunchResult).Errno != 0 {
		t.Fatalf("launch: %+v", m)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(s.Reader(wire.Stdout), buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("read %q, %v", buf, err)
	}
	pids := readPids(t, pidFile)
	s.Close() // the interpreter dies
	waitGone(t, pids)
	if st := ip.relay.Stats(); st.Errors != 1 {
		t.Errorf("a lost connection should count as an error: %+v", st)
	}
}

// readPids reads the pids a fixture wrote.
func readPids(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		var pid int
		for _, c := range f {
			pid = pid*10 + int(c-'0')
		}
		pids = append(pids, pid)
	}
	if len(pids) == 0 {
		t.Fatalf("no pids in %s", path)
	}
	return pids
}

// waitGone waits until none of pids exists (not even as a zombie).
func waitGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for _, pid := range pids {
		for {
			_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
			if err != nil {
				break
			}
			if time.Now().After(deadline) {
				st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
				t.Fatalf("host process %d is still there: %s", pid, st)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestRelayMaxSessions: with MaxSessions reached, a further authorised launch waits and is
// served once a session ends.
func TestRelayMaxSessions(t *testing.T) {
	ip := startInproc(t, func(c *host.Config) { c.MaxSessions = 2 }, nil)
	type running struct {
		s    *wire.Session
		pids []int
	}
	var held []running
	for i := range 2 {
		pidFile := filepath.Join(ip.share, fmt.Sprintf("pids%d", i))
		conn, err := net.Dial("unix", ip.sock)
		if err != nil {
			t.Fatal(err)
		}
		s := wire.NewSession(conn, wire.RoleGuest)
		s.Send(wire.NewHello(testToken), launchOf("/mnt/host/bin/sleeper", pidFile))
		s.Recv(context.Background())
		if m, _ := s.Recv(context.Background()); m == nil || m.(*wire.LaunchResult).Errno != 0 {
			t.Fatalf("launch %d: %+v", i, m)
		}
		buf := make([]byte, 6)
		io.ReadFull(s.Reader(wire.Stdout), buf)
		held = append(held, running{s, readPids(t, pidFile)})
	}
	third := make(chan result, 1)
	go func() { third <- guestRun(t, ip.sock, testToken, launchOf("/mnt/host/bin/true"), nil) }()
	// The third is accepted and authorised, then waits for a slot.
	for st := ip.relay.Stats(); st.Waiting != 1; st = ip.relay.Stats() {
		select {
		case res := <-third:
			t.Fatalf("a third session was served while two were running: %+v", res)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if st := ip.relay.Stats(); st.Active != 2 || st.Sessions != 3 || st.Pending != 0 {
		t.Errorf("stats while full: %+v", st)
	}
	held[0].s.Close()
	waitGone(t, held[0].pids)
	if res := <-third; res.err != nil || res.exit == nil || res.exit.Status() != 0 {
		t.Errorf("the waiting session: %+v", res)
	}
	held[1].s.Close()
	waitGone(t, held[1].pids)
}
