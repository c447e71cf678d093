package guest

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The interpreter's own socket on the Unix transport: connect, both directions, a deadline
// that fires as a timeout, the peer's close as EOF, and the addresses a trace names.
func TestConnUnix(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "relay.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	peer := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(peer)
			return
		}
		peer <- c
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, "unix:"+sock)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	p := <-peer
	if p == nil {
		t.Fatal("no connection accepted")
	}

	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(p, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("peer read %q, %v", buf, err)
	}

	// Nothing to read: the deadline ends the read as a timeout (the handshake's bound).
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Read(buf); !isTimeout(err) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v, want a timeout", err)
	}
	c.SetReadDeadline(time.Time{})

	network, local, remote := c.addrs()
	if network != "unix" || remote != sock {
		t.Errorf("addrs = %q %q %q, want unix, the socket path", network, local, remote)
	}

	if _, err := p.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	p.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "bye" {
		t.Fatalf("ReadAll after the peer's close: %q, %v; want \"bye\" and EOF", got, err)
	}
}

// Dial's failures on the Unix transport carry the errno dialReason prints.
func TestDialUnixErrors(t *testing.T) {
	dir := t.TempDir()
	dead := filepath.Join(dir, "dead.sock")
	l, err := net.Listen("unix", dead)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	for _, tc := range []struct {
		addr string
		want syscall.Errno
	}{
		{"unix:" + filepath.Join(dir, "none.sock"), syscall.ENOENT},
		{"unix:" + dead, syscall.ECONNREFUSED},
	} {
		_, err := Dial(context.Background(), tc.addr)
		var de *dialError
		if !errors.As(err, &de) || de.network != "unix" || !errors.Is(err, tc.want) {
			t.Errorf("Dial(%s) = %v, want a unix dialError with %v", tc.addr, err, tc.want)
		}
		if got := dialReason(err, time.Second); got != tc.want.Error() {
			t.Errorf("dialReason = %q, want %q", got, tc.want.Error())
		}
	}
	if _, err := Dial(context.Background(), "tcp:1.2.3.4:5"); err == nil {
		t.Error("Dial of an unknown transport succeeded")
	}
}

// A vsock connect waits for the host until the caller's deadline, not the kernel's 2 s
// default: startDial sets the socket's connect timeout from the deadline.
func TestDialVsockConnectTimeout(t *testing.T) {
	if fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0); err != nil {
		t.Skipf("no AF_VSOCK here: %v", err)
	} else {
		unix.Close(fd)
	}
	// CID 2 (the host) from the host itself: the connect stays in progress or fails; the
	// socket's option is what is checked.
	c, err := startDial("vsock:2:5555", time.Now().Add(30*time.Second))
	if err != nil {
		t.Skipf("vsock connect: %v", err)
	}
	defer c.Close()
	var tv *unix.Timeval
	rc, _ := c.f.SyscallConn()
	rc.Control(func(fd uintptr) {
		tv, err = unix.GetsockoptTimeval(int(fd), unix.AF_VSOCK, unix.SO_VM_SOCKETS_CONNECT_TIMEOUT)
	})
	if err != nil {
		t.Fatalf("getsockopt: %v", err)
	}
	if d := time.Duration(tv.Nano()); d < 29*time.Second || d > 30*time.Second {
		t.Errorf("connect timeout %v, want the 30 s left to the deadline", d)
	}
}

// The interpreter connects only once the token was read: a user who may not run host
// programs gets the token error and the relay sees no connection (which it would log as a
// protocol error). Keeps a connect started earlier, to overlap it with the rest of the
// interpreter's preparation, from going in before the token read (see DESIGN: it did not
// pay anyway).
func TestInterpNoTokenNoConnection(t *testing.T) {
	f := newFixture(t, "")
	l, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.Remove(filepath.Join(f.dir, "token")); err != nil {
		t.Fatal(err)
	}
	r := run(t, f.interpCmd(t, f.exe, f.exe), nil)
	checkOneLine(t, r, 126, "cannot read the interop token", "no such file or directory")
	// The interpreter has exited: a connection it made would wait in the backlog now, and a
	// nonblocking accept(2) takes it at once.
	rc, err := l.(*net.UnixListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var aerr error
	rc.Control(func(fd uintptr) {
		var nfd int
		if nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC); aerr == nil {
			unix.Close(nfd)
		}
	})
	if aerr == nil {
		t.Error("the interpreter connected to the relay without a token")
	} else if aerr != unix.EAGAIN {
		t.Fatalf("accept: %v", aerr)
	}
}
