// Package vhostvsock is a userspace virtio-vsock device: a vhost-user back-end that serves
// QEMU's vhost-user-vsock-pci, so a guest gets the same AF_VSOCK it would get from the
// kernel's vhost_vsock on hosts without /dev/vhost-vsock (containers, CI runners, laptops).
//
// The host side looks like github.com/mdlayher/vsock: Listen(port) returns a net.Listener for
// guest→host connections to CID 2, Dial(ctx, port) a net.Conn to a guest port. Connections
// support deadlines and CloseWrite (half-close, the vsock SHUTDOWN), and their addresses carry
// CID and port. With Config.UDSPath set, the device also follows the Firecracker /
// vhost-device-vsock host convention for other programs: a guest connection to a port no
// in-process listener holds is bridged to the Unix socket "<UDSPath>_<port>", and a host
// program connecting to "<UDSPath>" and writing "CONNECT <port>\n" is answered
// "OK <hostport>\n" and bridged to the guest.
//
// Layers: internal/vhostuser (message framing with SCM_RIGHTS, memory table),
// internal/virtq (split virtqueues in guest memory, hostile-guest checks), and this package
// (vhost-user requests, the vsock connection table and credit flow control).
//
// QEMU 7.2's vhost-user-vsock cannot reconnect to a back-end: when the back-end dies, the
// guest loses vsock until the VM restarts, so the back-end must live exactly as long as QEMU.
//
// We wrote our own instead of using a dependency because no pure-Go vhost-user back-end
// exists; the Rust vhost-device-vsock would be an extra toolchain and process to ship.
package vhostvsock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// HostCID is the CID of the host as the guest sees it.
const HostCID = cidHost

// DefaultBufferSize is the per-connection receive buffer advertised to the guest (buf_alloc)
// and the size of the per-connection send buffer.
const DefaultBufferSize = 1 << 20

// Config configures a Device.
type Config struct {
	// SocketPath is the vhost-user Unix socket the back-end listens on; QEMU connects to it
	// (-chardev socket,path=SocketPath). Required.
	SocketPath string
	// GuestCID is answered to GET_CONFIG and becomes the guest's CID. Must be >= 3.
	GuestCID uint32
	// UDSPath, when set, enables the Firecracker-style host side: "<UDSPath>_<port>" is
	// dialed for guest connections to ports without an in-process listener, and "<UDSPath>"
	// accepts host programs that write "CONNECT <port>\n".
	UDSPath string
	// Logger receives protocol events; nil means slog.Default().
	Logger *slog.Logger
	// BufferSize is the per-connection buffer in each direction; zero means DefaultBufferSize.
	BufferSize int
	// MaxConns bounds concurrent connections; guest requests beyond it are refused. Zero means 1024.
	MaxConns int
}

// Addr is a vsock address. It implements net.Addr.
type Addr struct {
	CID  uint32
	Port uint32
}

// Network returns "vsock".
func (a Addr) Network() string { return "vsock" }

// String returns "host(2):PORT" or "vm(CID):PORT" as mdlayher/vsock does.
func (a Addr) String() string {
	if a.CID == cidHost {
		return fmt.Sprintf("host(%d):%d", a.CID, a.Port)
	}
	return fmt.Sprintf("vm(%d):%d", a.CID, a.Port)
}

var _ net.Addr = Addr{} // and *Addr, which Conn and Listener return

// Device is the userspace vsock device. Its methods are safe for concurrent use.
type Device struct {
	cfg Config
	log *slog.Logger
	ln  *net.UnixListener
	uds *net.UnixListener

	stats       stats
	wakeFD      int
	closeCh     chan struct{} // closed by Close
	wakePending atomic.Bool
	wg          sync.WaitGroup

	serveMu sync.Mutex // one Serve at a time

	mu        sync.Mutex
	closed    bool
	front     *frontend // nil when no front-end is connected
	conns     map[connKey]*Conn
	atLimit   bool // refusing REQUESTs at MaxConns: logged once per episode
	listeners map[uint32]*Listener
	ctrl      []header // replies not tied to a connection (RST), bounded
	ready     connQueue
	nextPort  uint32
	bufSize   int
	// closeTimeout is closeTimeout; tests shorten or lengthen it.
	closeTimeout time.Duration

	// onRequest, nil outside tests, is called with mu held when a guest REQUEST for a new
	// connection arrives, before it is answered: a test holds the answer back there.
	onRequest func(port uint32)
}

// New validates cfg and starts listening on cfg.SocketPath (and cfg.UDSPath), so QEMU can
// connect as soon as New returns. Call Serve to serve the front-end and Close to release.
func New(cfg Config) (*Device, error) {
	if cfg.SocketPath == "" {
		return nil, errors.New("vhostvsock: Config.SocketPath is required")
	}
	if cfg.GuestCID < 3 || cfg.GuestCID == ^uint32(0) {
		return nil, fmt.Errorf("vhostvsock: guest CID %d is reserved (use 3 or more)", cfg.GuestCID)
	}
	if cfg.BufferSize == 0 {
		cfg.BufferSize = DefaultBufferSize
	}
	if cfg.BufferSize < 4096 || cfg.BufferSize > 64<<20 {
		return nil, fmt.Errorf("vhostvsock: buffer size %d out of range (4 KiB..64 MiB)", cfg.BufferSize)
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 1024
	}
	d := &Device{
		cfg: cfg, log: cfg.Logger,
		conns: map[connKey]*Conn{}, listeners: map[uint32]*Listener{},
		nextPort: 49152, bufSize: cfg.BufferSize, closeCh: make(chan struct{}), closeTimeout: closeTimeout,
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	var err error
	if d.ln, err = listenUnix(cfg.SocketPath); err != nil {
		return nil, err
	}
	if cfg.UDSPath != "" {
		if d.uds, err = listenUnix(cfg.UDSPath); err != nil {
			d.ln.Close()
			return nil, err
		}
	}
	if d.wakeFD, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		d.ln.Close()
		if d.uds != nil {
			d.uds.Close()
		}
		return nil, fmt.Errorf("vhostvsock: eventfd: %w", err)
	}
	if d.uds != nil {
		d.wg.Add(1)
		go d.serveUDS()
	}
	return d, nil
}

// listenUnix listens on path, replacing a stale socket file left by a dead process.
func listenUnix(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("vhostvsock: %s is in use by another process", path)
		}
		os.Remove(path)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("vhostvsock: listen: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	// Whoever connects drives the device (the vhost-user socket) or the guest's ports
	// (the UDS): owner only. chmod, not umask: the umask is process-wide.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("vhostvsock: %w", err)
	}
	return ln, nil
}

func (d *Device) closing() <-chan struct{} { return d.closeCh }

// Stats are counters since New, for status output and benchmarks.
type Stats struct {
	Kicks      uint64 // notifications from the guest (kick eventfds)
	Interrupts uint64 // notifications to the guest (call eventfds)
	Passes     uint64 // ring worker passes
	TxPackets  uint64 // packets from the guest
	RxPackets  uint64 // packets to the guest
	TxBytes    uint64 // payload bytes from the guest
	RxBytes    uint64 // payload bytes to the guest
	Conns      int    // live connections
	Refused    uint64 // guest REQUESTs refused because MaxConns connections were open
	Connected  bool   // a front-end (QEMU) is connected
}

type stats struct {
	kicks, interrupts, passes, txPackets, rxPackets, txBytes, rxBytes, refused, creditWaits atomic.Uint64
}

// Stats returns the device's counters.
func (d *Device) Stats() Stats {
	d.mu.Lock()
	n, f := len(d.conns), d.front != nil
	d.mu.Unlock()
	return Stats{
		Kicks: d.stats.kicks.Load(), Interrupts: d.stats.interrupts.Load(), Passes: d.stats.passes.Load(),
		TxPackets: d.stats.txPackets.Load(), RxPackets: d.stats.rxPackets.Load(),
		TxBytes: d.stats.txBytes.Load(), RxBytes: d.stats.rxBytes.Load(), Conns: n, Connected: f,
		Refused: d.stats.refused.Load(),
	}
}

// CID returns the guest CID.
func (d *Device) CID() uint32 { return d.cfg.GuestCID }

// Close stops serving, resets every connection, closes every listener and removes the
// sockets. Blocked Serve, Accept, Dial, Read and Write calls return.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.closeCh)
	f := d.front
	ls := make([]*Listener, 0, len(d.listeners))
	for _, l := range d.listeners {
		ls = append(ls, l)
	}
	d.resetAllLocked(errDeviceClosed)
	d.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	if f != nil {
		f.conn.Close()
	}
	err := d.ln.Close()
	if d.uds != nil {
		d.uds.Close()
	}
	d.serveMu.Lock() // wait for Serve to finish its cleanup
	d.serveMu.Unlock()
	d.wg.Wait()
	unix.Close(d.wakeFD)
	return err
}

// Listen returns a listener for guest connections to the host's port (CID 2).
func (d *Device) Listen(port uint32) (net.Listener, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	addr := &Addr{CID: cidHost, Port: port}
	if d.closed {
		return nil, &net.OpError{Op: "listen", Net: "vsock", Addr: addr, Err: net.ErrClosed}
	}
	if port == ^uint32(0) {
		return nil, &net.OpError{Op: "listen", Net: "vsock", Addr: addr, Err: syscall.EINVAL}
	}
	if _, ok := d.listeners[port]; ok {
		return nil, &net.OpError{Op: "listen", Net: "vsock", Addr: addr, Err: syscall.EADDRINUSE}
	}
	// The backlog holds as many connections as the device may have: MaxConns is the bound,
	// not the pace of Accept. With 128, a burst of REQUESTs (a thousand launches at once,
	// taken 64 per worker pass) outran the accept loop and most of it was reset.
	l := &Listener{d: d, addr: addr, ch: make(chan *Conn, d.cfg.MaxConns), done: make(chan struct{})}
	d.listeners[port] = l
	return l, nil
}

// Dial connects to port on the guest. It waits for the guest's answer until ctx ends; a port
// without a listener in the guest gives ECONNREFUSED.
func (d *Device) Dial(ctx context.Context, port uint32) (net.Conn, error) {
	raddr := &Addr{CID: d.cfg.GuestCID, Port: port}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, &net.OpError{Op: "dial", Net: "vsock", Addr: raddr, Err: net.ErrClosed}
	}
	if len(d.conns) >= d.cfg.MaxConns || len(d.ctrl) >= maxCtrl {
		// Full table, or the guest is not taking our replies (see abortLocked).
		d.mu.Unlock()
		return nil, &net.OpError{Op: "dial", Net: "vsock", Addr: raddr, Err: syscall.EAGAIN}
	}
	hp, ok := d.allocPortLocked(port)
	if !ok {
		d.mu.Unlock()
		return nil, &net.OpError{Op: "dial", Net: "vsock", Addr: raddr, Err: syscall.EADDRNOTAVAIL}
	}
	c := d.newConnLocked(connKey{guest: port, host: hp}, stConnecting)
	c.pend |= pendRequest
	d.scheduleLocked(c)
	d.mu.Unlock()
	d.wake()

	select {
	case <-c.established:
	case <-ctx.Done():
		d.mu.Lock()
		if c.state == stConnecting {
			d.abortLocked(c, true)
			d.mu.Unlock()
			d.wake()
			return nil, &net.OpError{Op: "dial", Net: "vsock", Addr: raddr, Err: ctx.Err()}
		}
		d.mu.Unlock()
		<-c.established
	}
	d.mu.Lock()
	err := c.dialErr
	d.mu.Unlock()
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: "vsock", Addr: raddr, Err: err}
	}
	return c, nil
}

// allocPortLocked picks a host port unused with the guest port and by listeners.
func (d *Device) allocPortLocked(guest uint32) (uint32, bool) {
	for range 1 << 16 {
		p := d.nextPort
		d.nextPort++
		if d.nextPort == ^uint32(0) {
			d.nextPort = 1024
		}
		if _, ok := d.listeners[p]; ok {
			continue
		}
		if _, ok := d.conns[connKey{guest: guest, host: p}]; ok {
			continue
		}
		return p, true
	}
	return 0, false
}

// wake makes the ring worker run (coalesced).
func (d *Device) wake() {
	if d.wakePending.CompareAndSwap(false, true) {
		var one = [8]byte{1}
		unix.Write(d.wakeFD, one[:])
	}
}

var (
	errDeviceClosed  = errors.New("vhostvsock: device closed")
	errFrontendGone  = errors.New("vhostvsock: QEMU disconnected")
	errConnReset     = syscall.ECONNRESET
	errConnRefused   = syscall.ECONNREFUSED
	errBrokenPipe    = syscall.EPIPE
	errWriteShutdown = errors.New("write after CloseWrite")
)

// opError builds the net.OpError returned by Conn and Listener methods, normalising EOF and
// closed as mdlayher/vsock does.
func opError(op string, local, remote net.Addr, err error) error {
	switch {
	case err == nil:
		return nil
	case err == io.EOF:
		return io.EOF
	}
	return &net.OpError{Op: op, Net: "vsock", Source: local, Addr: remote, Err: err}
}
