// Package vsockdial connects AF_VSOCK stream sockets within the caller's deadline.
//
// Linux gives up a vsock connect after the socket's own connect timeout, 2 s unless set
// (VSOCK_DEFAULT_CONNECT_TIMEOUT), however long the caller is willing to wait, and fails it
// with ETIMEDOUT. Under load the host's answer takes longer than that: with a thousand
// interpreters starting at once in a TCG guest, the guest's own vsock workers run seconds late.
// Dial sets the socket's connect timeout to the context's deadline before connecting.
package vsockdial

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"github.com/mdlayher/socket"
	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// Dial connects to port on cid. With a deadline in ctx the kernel waits for the peer's
// answer until then; without one it keeps its default.
func Dial(ctx context.Context, cid, port uint32) (*Conn, error) {
	remote := &vsock.Addr{ContextID: cid, Port: port}
	c, err := dial(ctx, cid, port)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: "vsock", Addr: remote, Err: unwrapPath(err)}
	}
	c.remote = remote
	return c, nil
}

func dial(ctx context.Context, cid, port uint32) (*Conn, error) {
	sc, err := socket.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0, "vsock", nil)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		if err := setConnectTimeout(sc, time.Until(dl)); err != nil {
			sc.Close()
			return nil, err
		}
	}
	if _, err := sc.Connect(ctx, &unix.SockaddrVM{CID: cid, Port: port}); err != nil {
		sc.Close()
		return nil, err
	}
	c := &Conn{c: sc, local: &vsock.Addr{}}
	if sa, err := sc.Getsockname(); err == nil {
		if vm, ok := sa.(*unix.SockaddrVM); ok {
			c.local = &vsock.Addr{ContextID: vm.CID, Port: vm.Port}
		}
	}
	return c, nil
}

// setConnectTimeout sets SO_VM_SOCKETS_CONNECT_TIMEOUT (a struct timeval, the native one
// on the 64-bit architectures lab builds for).
func setConnectTimeout(sc *socket.Conn, d time.Duration) error {
	d = max(d, time.Millisecond)
	tv := unix.NsecToTimeval(d.Nanoseconds())
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptTimeval(int(fd), unix.AF_VSOCK, unix.SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv)
	}); err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("setsockopt SO_VM_SOCKETS_CONNECT_TIMEOUT", serr)
	}
	return nil
}

// ConnectTimeout reads the socket's connect timeout (for tests and diagnostics).
func (c *Conn) ConnectTimeout() (time.Duration, error) {
	rc, err := c.c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var tv *unix.Timeval
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		tv, gerr = unix.GetsockoptTimeval(int(fd), unix.AF_VSOCK, unix.SO_VM_SOCKETS_CONNECT_TIMEOUT)
	}); err != nil {
		return 0, err
	}
	if gerr != nil {
		return 0, os.NewSyscallError("getsockopt SO_VM_SOCKETS_CONNECT_TIMEOUT", gerr)
	}
	return time.Duration(tv.Nano()), nil
}

// Conn is a connected vsock stream. It implements net.Conn and CloseWrite, with errors
// shaped as github.com/mdlayher/vsock's (net.OpError; io.EOF and net.ErrClosed as net's).
type Conn struct {
	c             *socket.Conn
	local, remote *vsock.Addr
}

var _ net.Conn = &Conn{}

func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.c.Read(b)
	return n, c.opError("read", err)
}

func (c *Conn) Write(b []byte) (int, error) {
	n, err := c.c.Write(b)
	return n, c.opError("write", err)
}

func (c *Conn) Close() error      { return c.opError("close", c.c.Close()) }
func (c *Conn) CloseWrite() error { return c.opError("close", c.c.CloseWrite()) }

func (c *Conn) LocalAddr() net.Addr  { return c.local }
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

func (c *Conn) SetDeadline(t time.Time) error      { return c.opError("set", c.c.SetDeadline(t)) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.opError("set", c.c.SetReadDeadline(t)) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.opError("set", c.c.SetWriteDeadline(t)) }

func (c *Conn) opError(op string, err error) error {
	if err == nil {
		return nil
	}
	err = unwrapPath(err)
	switch {
	case err == io.EOF, errors.Is(err, unix.ENOTCONN):
		return io.EOF // a peer's reset or shutdown reads as EOF, as in mdlayher/vsock
	case errors.Is(err, os.ErrClosed), errors.Is(err, unix.EBADF):
		err = net.ErrClosed
	}
	return &net.OpError{Op: op, Net: "vsock", Source: c.local, Addr: c.remote, Err: err}
}

// unwrapPath drops the os.PathError that os.File methods wrap errors in.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
