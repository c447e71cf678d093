package host_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"lab/host"
	"lab/wire"
)

func FuzzParseLabEnv(f *testing.F) {
	for _, s := range []string{"", "A", "A/p:B/l:C/u:D/w", "A/up::B/x:/p", "A=B/p", "X/pluw:Y/", "\x00/p"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, v := range host.ParseLabEnv(s) {
			if v.Name == "" || strings.ContainsAny(v.Name, "=:/\x00") {
				t.Fatalf("ParseLabEnv(%q) gave name %q", s, v.Name)
			}
			if !v.ToGuest && !v.ToHost {
				t.Fatalf("ParseLabEnv(%q): %q crosses no direction", s, v.Name)
			}
		}
	})
}

// pairListener hands out the server ends of Unix socket pairs.
type pairListener struct {
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func newPairListener() *pairListener {
	return &pairListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pairListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pairListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *pairListener) Addr() net.Addr { return &net.UnixAddr{Name: "pair", Net: "unix"} }

func (l *pairListener) dial(t *testing.T) *net.UnixConn {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	client, server := conn(fds[0]), conn(fds[1])
	l.conns <- server
	return client.(*net.UnixConn)
}

// FuzzRelayHandshake feeds arbitrary first bytes to the relay: it must never crash and must
// answer with a Hello and a refusal (nothing here names a program it may run), or close.
func FuzzRelayHandshake(f *testing.F) {
	hello, _ := wire.AppendMessage(nil, wire.NewHello(testToken))
	launch, _ := wire.AppendMessage(nil, &wire.Launch{Format: "pe", Path: "/mnt/host/../x", Argv: []string{"x"}})
	f.Add(append(append([]byte(nil), hello...), launch...))
	f.Add(hello)
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"))
	f.Add([]byte{0, 0, 0, 1, 1})
	f.Add([]byte{0, 1, 0, 6, 2, 0})
	big, _ := wire.AppendMessage(nil, wire.NewHello(make([]byte, wire.MaxToken))) // the largest Hello
	f.Add(big)
	r, err := host.NewRelay(host.Config{
		Token:            testToken,
		Shares:           []host.Share{{HostPath: f.TempDir(), GuestPath: "/mnt/host"}},
		HandshakeTimeout: 200 * time.Millisecond,
		FallbackDir:      "/",
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		f.Fatal(err)
	}
	l := newPairListener()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, l) }()
	defer func() { cancel(); <-done }()
	f.Fuzz(func(t *testing.T, data []byte) {
		c := l.dial(t)
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() { c.Write(data); c.CloseWrite() }()
		buf := make([]byte, wire.MaxPayload)
		m, err := wire.ReadMessage(c, buf)
		if err != nil {
			t.Fatalf("no reply: %v", err)
		}
		if _, ok := m.(*wire.Hello); !ok {
			t.Fatalf("first reply %T", m)
		}
		m, err = wire.ReadMessage(c, buf)
		if err != nil {
			t.Fatalf("no launch result after the Hello: %v", err)
		}
		if lr, ok := m.(*wire.LaunchResult); !ok || lr.Errno == 0 {
			t.Fatalf("reply %+v: want a refusal", m)
		}
	})
}
