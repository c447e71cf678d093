package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Conn is the interpreter's connection to the relay: a Unix or vsock stream socket as an
// *os.File, so reads, writes and deadlines go through the runtime's poller as a net.Conn's
// do.
//
// Why not package net (or github.com/mdlayher/vsock, which needs it): every launch execs
// the interpreter in the guest, and net's package inits (net, net/netip, dnsmessage) touch
// pages that cost page faults under TCG, about 8 per launch for an otherwise equal static
// program there; the interpreter needs one connected socket, not a network stack.
type Conn struct {
	f       *os.File
	network string // "unix" or "vsock"
	addr    string // the relay address as configured ("vsock:2:1024")
}

// dialError is a failed connect to the relay at addr (network "unix" or "vsock").
type dialError struct {
	network, addr string
	err           error
}

func (e *dialError) Error() string { return "dial " + e.addr + ": " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// startDial opens a nonblocking socket for the relay address addr and starts connecting
// it: a vsock connect returns at once (EINPROGRESS) while the host answers, a Unix one has
// connected or failed. With a non-zero deadline the kernel waits for a vsock peer until
// then (see setConnectTimeout). finishDial waits for the outcome.
func startDial(addr string, deadline time.Time) (*Conn, error) {
	network, a, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	var domain int
	var sa unix.Sockaddr
	switch network {
	case "vsock":
		cid, port, _ := vsockAddr(a)
		domain, sa = unix.AF_VSOCK, &unix.SockaddrVM{CID: cid, Port: port}
	default:
		domain, sa = unix.AF_UNIX, &unix.SockaddrUnix{Name: a}
	}
	fail := func(op string, err error) (*Conn, error) {
		return nil, &dialError{network: network, addr: addr, err: os.NewSyscallError(op, err)}
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail("socket", err)
	}
	if network == "vsock" && !deadline.IsZero() {
		if err := setConnectTimeout(fd, time.Until(deadline)); err != nil {
			unix.Close(fd)
			return fail("setsockopt SO_VM_SOCKETS_CONNECT_TIMEOUT", err)
		}
	}
	for {
		err = unix.Connect(fd, sa)
		if err != unix.EINTR {
			break
		}
	}
	switch err {
	case nil, unix.EINPROGRESS, unix.EALREADY, unix.EISCONN:
	default:
		// A Unix socket's full backlog is EAGAIN here, an error as in package net.
		unix.Close(fd)
		return fail("connect", err)
	}
	// A nonblocking descriptor: os.NewFile puts it in the runtime's poller.
	return &Conn{f: os.NewFile(uintptr(fd), addr), network: network, addr: addr}, nil
}

// finishDial waits until the connect started by startDial completes, fails or ctx ends,
// and closes c unless it connected.
func (c *Conn) finishDial(ctx context.Context) error {
	err := c.awaitConnect(ctx)
	if err != nil {
		c.f.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &dialError{network: c.network, addr: c.addr, err: err}
	}
	return nil
}

func (c *Conn) awaitConnect(ctx context.Context) error {
	if dl, ok := ctx.Deadline(); ok {
		if err := c.f.SetWriteDeadline(dl); err != nil {
			return err
		}
	}
	// Without a goroutine: a cancelled ctx moves the deadline to the past.
	stop := context.AfterFunc(ctx, func() { c.f.SetWriteDeadline(time.Unix(0, 1)) })
	defer stop()
	rc, err := c.f.SyscallConn()
	if err != nil {
		return err
	}
	var cerr error
	if err := rc.Write(func(fd uintptr) bool {
		// The poller calls this first at once, then each time the socket is writable: the
		// connect's outcome is then in SO_ERROR (0 also for a spurious wake-up, so
		// getpeername confirms).
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			cerr = os.NewSyscallError("getsockopt", err)
			return true
		}
		switch errno := unix.Errno(v); errno {
		case 0, unix.EISCONN:
		case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
			return false
		default:
			cerr = os.NewSyscallError("connect", errno)
			return true
		}
		_, err = unix.Getpeername(int(fd))
		return err == nil
	}); err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	return c.f.SetWriteDeadline(time.Time{})
}

// setConnectTimeout sets SO_VM_SOCKETS_CONNECT_TIMEOUT (a struct timeval, the native one
// on the 64-bit architectures lab builds for): Linux otherwise gives up a vsock connect
// after its default 2 s however long the interpreter would wait, and under load (a thousand
// interpreters starting at once in a TCG guest) the host's answer takes longer.
func setConnectTimeout(fd int, d time.Duration) error {
	tv := unix.NsecToTimeval(max(d, time.Millisecond).Nanoseconds())
	return unix.SetsockoptTimeval(fd, unix.AF_VSOCK, unix.SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv)
}

// Dial connects to a relay address ("unix:PATH" or "vsock:CID:PORT") within ctx: for
// vsock the kernel waits for the host's answer until ctx's deadline, not its own 2 s.
func Dial(ctx context.Context, addr string) (*Conn, error) {
	dl, _ := ctx.Deadline()
	c, err := startDial(addr, dl)
	if err != nil {
		return nil, err
	}
	if err := c.finishDial(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Read reads from the relay. A vsock peer's reset reads as ENOTCONN: it is the end of the
// stream, as with github.com/mdlayher/vsock.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.f.Read(b)
	if err != nil && c.network == "vsock" && errors.Is(err, unix.ENOTCONN) {
		return n, io.EOF
	}
	return n, err
}

func (c *Conn) Write(b []byte) (int, error)        { return c.f.Write(b) }
func (c *Conn) Close() error                       { return c.f.Close() }
func (c *Conn) SetDeadline(t time.Time) error      { return c.f.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.f.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }

// addrs names both ends for a trace: the network, and the local and remote addresses as
// package net and github.com/mdlayher/vsock print them ("vm(3):1234", "host(2):1024"). A
// guest vsock socket is bound to VMADDR_CID_ANY: the guest's own CID is named instead.
func (c *Conn) addrs() (network, local, remote string) {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return c.network, "", ""
	}
	var lsa, rsa unix.Sockaddr
	rc.Control(func(fd uintptr) {
		lsa, _ = unix.Getsockname(int(fd))
		rsa, _ = unix.Getpeername(int(fd))
	})
	if vm, ok := lsa.(*unix.SockaddrVM); ok && vm.CID == unix.VMADDR_CID_ANY {
		if cid, err := localCID(); err == nil {
			lsa = &unix.SockaddrVM{CID: cid, Port: vm.Port}
		}
	}
	return c.network, sockaddrString(lsa), sockaddrString(rsa)
}

func sockaddrString(sa unix.Sockaddr) string {
	switch sa := sa.(type) {
	case *unix.SockaddrVM:
		var host string
		switch sa.CID {
		case unix.VMADDR_CID_HYPERVISOR:
			host = "hypervisor"
		case unix.VMADDR_CID_LOCAL:
			host = "local"
		case unix.VMADDR_CID_HOST:
			host = "host"
		default:
			host = "vm"
		}
		return fmt.Sprintf("%s(%d):%d", host, sa.CID, sa.Port)
	case *unix.SockaddrUnix:
		return sa.Name
	}
	return ""
}

// localCID asks /dev/vsock for this machine's context ID.
func localCID() (uint32, error) {
	f, err := os.Open("/dev/vsock")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	cid, err := unix.IoctlGetUint32(int(f.Fd()), unix.IOCTL_VM_SOCKETS_GET_LOCAL_CID)
	if err != nil {
		return 0, fmt.Errorf("ioctl IOCTL_VM_SOCKETS_GET_LOCAL_CID: %w", err)
	}
	return cid, nil
}
