package vhostvsock

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// The Firecracker / vhost-device-vsock host convention.

// handshakeTimeout bounds dialing "<UDSPath>_<port>" and the CONNECT exchange.
const handshakeTimeout = 10 * time.Second

// dialUDS serves a guest REQUEST for a port without an in-process listener by dialing the
// Unix socket "<UDSPath>_<port>"; an absent socket refuses the connection (RST).
func (d *Device) dialUDS(c *Conn) {
	defer d.wg.Done()
	path := fmt.Sprintf("%s_%d", d.cfg.UDSPath, c.key.host)
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	stop := d.onClose(cancel)
	var dialer net.Dialer
	uc, err := dialer.DialContext(ctx, "unix", path)
	stop()
	cancel()
	d.mu.Lock()
	if c.state != stConnectingOut {
		d.mu.Unlock()
		if uc != nil {
			uc.Close()
		}
		return
	}
	if err != nil {
		d.log.Debug("vhostvsock: refusing guest connection", "port", c.key.host, "err", err)
		d.abortLocked(c, true)
		d.mu.Unlock()
		d.wake()
		return
	}
	c.state = stEstablished
	close(c.established)
	c.pend |= pendResponse
	d.scheduleLocked(c)
	d.mu.Unlock()
	d.wake()
	bridge(c, uc.(*net.UnixConn), uc)
}

// serveUDS accepts host programs on "<UDSPath>".
func (d *Device) serveUDS() {
	defer d.wg.Done()
	for {
		uc, err := d.uds.AcceptUnix()
		if err != nil {
			return
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.handleUDS(uc)
		}()
	}
}

// handleUDS runs the "CONNECT <port>\n" / "OK <hostport>\n" handshake and bridges.
func (d *Device) handleUDS(uc *net.UnixConn) {
	uc.SetDeadline(time.Now().Add(handshakeTimeout))
	stop := d.onClose(func() { uc.Close() }) // Close does not wait for a slow handshake
	defer stop()
	br := bufio.NewReaderSize(uc, 64)
	port, err := readConnect(br)
	if err != nil {
		d.log.Debug("vhostvsock: bad host connect request", "err", err)
		uc.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	vc, err := d.Dial(ctx, port)
	cancel()
	if err != nil {
		d.log.Debug("vhostvsock: host connect failed", "port", port, "err", err)
		uc.Close()
		return
	}
	c := vc.(*Conn)
	if _, err := fmt.Fprintf(uc, "OK %d\n", c.key.host); err != nil {
		vc.Close()
		uc.Close()
		return
	}
	uc.SetDeadline(time.Time{})
	bridge(c, uc, br)
}

// onClose runs fn if the device closes before stop is called.
func (d *Device) onClose(fn func()) (stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-d.closing():
			fn()
		case <-done:
		}
	}()
	return func() { close(done) }
}

// readConnect parses "CONNECT <port>\n".
func readConnect(br *bufio.Reader) (uint32, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, fmt.Errorf("vhostvsock: reading CONNECT line: %w", err)
	}
	f := strings.Fields(string(line))
	if len(f) != 2 || f[0] != "CONNECT" {
		return 0, fmt.Errorf("vhostvsock: malformed CONNECT line %q", line)
	}
	p, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		return 0, fmt.Errorf("vhostvsock: malformed port in %q", line)
	}
	return uint32(p), nil
}

// copyIn copies a host program's stream into a vsock connection in reads of up to 32 KiB,
// each one Write (a device lock and a worker wake-up). r is hidden behind a plain Reader:
// after a CONNECT it is the handshake's 64-byte bufio.Reader, whose WriteTo would refill
// its buffer and write 64 bytes at a time, where its Read returns what it buffered and
// then reads into the caller's buffer directly.
func copyIn(vc io.Writer, r io.Reader) (int64, error) {
	return io.CopyBuffer(vc, struct{ io.Reader }{r}, make([]byte, 32<<10))
}

// bridge copies both ways between a vsock connection and a Unix socket, passing half-closes
// through, and closes both when both directions are done or either fails.
func bridge(vc *Conn, uc *net.UnixConn, r io.Reader) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := copyIn(vc, r); err != nil {
			vc.Close()
			uc.Close()
			return
		}
		vc.CloseWrite()
	}()
	if _, err := io.Copy(uc, vc); err != nil {
		vc.Close()
		uc.Close()
	} else {
		uc.CloseWrite()
	}
	<-done
	vc.Close()
	uc.Close()
}
