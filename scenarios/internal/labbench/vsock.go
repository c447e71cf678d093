package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// dialTimeout bounds a connect to the host: under TCG and load its answer comes later than
// the kernel's own 2 s vsock connect timeout.
const dialTimeout = 30 * time.Second

// sockBuf is the probe's vsock socket buffer (SO_VM_SOCKETS_BUFFER_SIZE), see dialHost.
const sockBuf = 4 << 20

// readAll reads r to EOF in len(buf)-byte reads and returns how many bytes it read. Not
// io.Copy(io.Discard, r): io.Discard's ReadFrom reads in 8 KiB, so a transfer costs the
// guest 32 times the reads (read syscalls are dear under TCG).
func readAll(r io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		k, err := r.Read(buf)
		n += int64(k)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

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
	// The socket's buffer is the credit the host may use: with Linux's default (256 KiB) a
	// 6.1 guest tells the host only after reading 192 KiB of it, so the host idles once per
	// 192 KiB until that CREDIT_UPDATE arrives, and the figure measures that stall, not the
	// transport (vhostvsock's BenchmarkIntegrationHostToGuestRaw: 275 stalls per 64 MiB at
	// 256 KiB, 2 at 4 MiB). MAX first: SIZE is clamped to it.
	for _, opt := range []int{unix.SO_VM_SOCKETS_BUFFER_MAX_SIZE, unix.SO_VM_SOCKETS_BUFFER_SIZE} {
		if err := unix.SetsockoptUint64(fd, unix.AF_VSOCK, opt, sockBuf); err != nil {
			unix.Close(fd)
			return vsockConn{}, fmt.Errorf("vsock buffer size: %w", err)
		}
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
