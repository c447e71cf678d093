package main

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// dialTimeout bounds a connect to the host: under TCG and load its answer comes later than
// the kernel's own 2 s vsock connect timeout.
const dialTimeout = 30 * time.Second

// vsockConn is a connected vsock stream socket, blocking: the probe uses it from one goroutine.
type vsockConn struct{ *os.File }

func (c vsockConn) CloseWrite() error { return unix.Shutdown(int(c.Fd()), unix.SHUT_WR) }

// dialHost connects to the host (CID 2) on port, waiting up to timeout for its answer: it
// sets the socket's connect timeout (SO_VM_SOCKETS_CONNECT_TIMEOUT) first, as lab's
// internal/vsockdial does. Copied, not imported: this probe is built as its own module
// (labprobe, from the embedded go.mod.txt), which cannot import lab's packages, and Go keeps
// lab/internal/... to lab's own packages anyway.
func dialHost(port uint32, timeout time.Duration) (vsockConn, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return vsockConn{}, fmt.Errorf("vsock socket: %w", err)
	}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.AF_VSOCK, unix.SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv); err != nil {
		unix.Close(fd)
		return vsockConn{}, fmt.Errorf("vsock connect timeout: %w", err)
	}
	for {
		// An interrupted vsock connect is reset to unconnected, so it can be tried again.
		err = unix.Connect(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_HOST, Port: port})
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return vsockConn{}, fmt.Errorf("vsock connect to the host's port %d: %w", port, err)
	}
	return vsockConn{os.NewFile(uintptr(fd), "vsock")}, nil
}
