package vhostvsock

import (
	"io"
	"net"
	"os"
	"time"
)

// connKey identifies a connection by both ports (the CIDs are fixed per device).
type connKey struct {
	guest uint32
	host  uint32
}

type connState uint8

const (
	stConnecting    connState = iota // host Dial: REQUEST pending or sent, waiting for RESPONSE
	stConnectingOut                  // guest REQUEST: dialing "<UDSPath>_<port>"
	stEstablished
	stClosed // removed from the table
)

// Pending control packets.
const (
	pendRequest = 1 << iota
	pendResponse
	pendCredit
	pendShutdown
	pendProbe // CREDIT_REQUEST: is the guest's socket still there? (see lingerExpiredLocked)
)

// closeTimeout is how long a closed connection waits for the guest's RST once everything
// was delivered, and how long the guest may stay silent while data is still queued for it,
// before we reset it (Linux uses 8 s). Time the guest spends reading slowly does not count.
const closeTimeout = 10 * time.Second

// Conn is a vsock stream connection between the host and the guest. It implements net.Conn
// and CloseWrite. All state is guarded by the device mutex.
type Conn struct {
	d             *Device
	key           connKey
	local, remote *Addr
	state         connState
	established   chan struct{} // closed when the connection leaves the connecting states
	dialErr       error
	resetErr      error // why the device reset it (nil: the guest reset it)

	rbuf       byteRing // guest -> host bytes not yet read; never more than we advertised
	fwdCnt     uint32   // bytes consumed from rbuf (advertised as fwd_cnt)
	lastAdvFwd uint32   // fwd_cnt the guest last heard

	wbuf         byteRing // host -> guest bytes not yet sent
	txCnt        uint32   // bytes sent to the guest
	peerBufAlloc uint32
	peerFwdCnt   uint32

	pend      uint8
	peerShut  uint32 // SHUTDOWN flags received
	shutFlags uint32 // SHUTDOWN flags to send
	localShut bool   // CloseWrite called
	closed    bool   // Close called
	queued    bool   // in Device.ready
	timer     *time.Timer
	heard     bool // a packet from the guest since the last linger check (after Close)
	probed    bool // a CREDIT_REQUEST went out at the last linger check and nothing was heard since

	readable chan struct{}
	writable chan struct{}
	done     chan struct{} // closed by Close
	rdl, wdl deadline
}

var _ net.Conn = &Conn{}

func (d *Device) newConnLocked(key connKey, st connState) *Conn {
	c := &Conn{
		d: d, key: key, state: st,
		local:       &Addr{CID: cidHost, Port: key.host},
		remote:      &Addr{CID: d.cfg.GuestCID, Port: key.guest},
		established: make(chan struct{}),
		rbuf:        byteRing{size: d.bufSize},
		wbuf:        byteRing{size: d.bufSize},
		readable:    make(chan struct{}, 1),
		writable:    make(chan struct{}, 1),
		done:        make(chan struct{}),
		rdl:         newDeadline(),
		wdl:         newDeadline(),
	}
	d.conns[key] = c
	return c
}

// credit is how many bytes the guest can take now.
func (c *Conn) credit() uint32 {
	inFlight := c.txCnt - c.peerFwdCnt
	if inFlight >= c.peerBufAlloc {
		return 0
	}
	return c.peerBufAlloc - inFlight
}

func (c *Conn) canSendData() bool {
	return c.state == stEstablished && c.wbuf.n > 0 && c.peerShut&shutdownRcv == 0 && c.credit() > 0
}

func (c *Conn) sendable() bool {
	if c.state == stClosed {
		return false
	}
	if c.pend&(pendRequest|pendResponse|pendCredit|pendProbe) != 0 || c.canSendData() {
		return true
	}
	return c.pend&pendShutdown != 0 && (c.wbuf.n == 0 || c.peerShut&shutdownRcv != 0)
}

// maybeCreditLocked schedules a CREDIT_UPDATE once a quarter of the buffer was consumed
// since the guest last heard our fwd_cnt, so the guest never stalls on stale credit.
func (c *Conn) maybeCreditLocked() {
	if c.fwdCnt-c.lastAdvFwd >= uint32(c.d.bufSize/4) {
		c.pend |= pendCredit
	}
}

// nextPacketLocked picks the next packet to send on c into a buffer with room payload bytes.
func (c *Conn) nextPacketLocked(room int) (header, int, bool) {
	h := header{
		SrcCID: cidHost, DstCID: uint64(c.d.cfg.GuestCID), SrcPort: c.key.host, DstPort: c.key.guest,
		Type: typeStream, BufAlloc: uint32(c.d.bufSize), FwdCnt: c.fwdCnt,
	}
	payload := 0
	switch {
	case c.pend&pendRequest != 0:
		h.Op = opRequest
		c.pend &^= pendRequest
	case c.pend&pendResponse != 0:
		h.Op = opResponse
		c.pend &^= pendResponse
	case c.pend&pendProbe != 0:
		h.Op = opCreditRequest
		c.pend &^= pendProbe
	case c.canSendData() && room > 0:
		h.Op = opRW
		payload = min(c.wbuf.n, int(c.credit()), room)
		h.Len = uint32(payload)
	case c.pend&pendShutdown != 0 && (c.wbuf.n == 0 || c.peerShut&shutdownRcv != 0):
		h.Op = opShutdown
		h.Flags = c.shutFlags
		c.pend &^= pendShutdown
	case c.pend&pendCredit != 0:
		h.Op = opCreditUpdate
	default:
		return h, 0, false
	}
	// Every packet carries our credit.
	c.pend &^= pendCredit
	c.lastAdvFwd = c.fwdCnt
	return h, payload, true
}

// scheduleLocked queues c for the ring worker when it has something to send.
func (d *Device) scheduleLocked(c *Conn) {
	if !c.queued && c.sendable() {
		c.queued = true
		d.ready.push(c)
	}
}

// abortLocked removes c, telling the guest with an RST when sendRST is set.
func (d *Device) abortLocked(c *Conn, sendRST bool) {
	if c.state == stClosed {
		return
	}
	// A connection's RST has room beyond maxCtrl (the bound on replies to unknown
	// connections): each connection is reset once, and dropping its RST while the guest
	// posts no receive buffers would leave the guest's socket connected to nothing. New
	// connections are not made while maxCtrl replies wait (tx stops, Dial says EAGAIN),
	// so this stays within maxCtrl + MaxConns.
	if sendRST && d.front != nil && len(d.ctrl) < maxCtrl+d.cfg.MaxConns {
		d.ctrl = append(d.ctrl, header{
			SrcCID: cidHost, DstCID: uint64(d.cfg.GuestCID), SrcPort: c.key.host, DstPort: c.key.guest,
			Type: typeStream, Op: opRST,
		})
	}
	d.removeLocked(c)
}

// removeLocked takes c out of the table; buffered received data stays readable.
func (d *Device) removeLocked(c *Conn) {
	if c.state == stClosed {
		return
	}
	if (c.state == stConnecting || c.state == stConnectingOut) && c.dialErr == nil {
		c.dialErr = errConnRefused
	}
	if c.state != stEstablished {
		close(c.established)
	}
	c.state = stClosed
	if d.conns[c.key] == c {
		delete(d.conns, c.key)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	c.wbuf.release()
	signal(c.readable)
	signal(c.writable)
}

// LocalAddr returns the host side: CID 2 and the host port.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the guest side: the guest CID and port.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

func (c *Conn) opErr(op string, err error) error { return opError(op, c.local, c.remote, err) }

// Read reads data sent by the guest. It returns io.EOF after the guest shut down its sending
// side (or closed or reset the connection) and every byte was read.
func (c *Conn) Read(p []byte) (int, error) {
	d := c.d
	for {
		d.mu.Lock()
		switch {
		case c.closed:
			d.mu.Unlock()
			return 0, c.opErr("read", net.ErrClosed)
		case isClosed(c.rdl.wait()):
			d.mu.Unlock()
			return 0, c.opErr("read", os.ErrDeadlineExceeded)
		case c.rbuf.n > 0:
			if len(p) == 0 {
				d.mu.Unlock()
				return 0, nil
			}
			n := c.rbuf.read(p)
			c.fwdCnt += uint32(n)
			c.maybeCreditLocked()
			d.scheduleLocked(c)
			// Wake whenever there is output, even if c was already queued: the worker may
			// be asleep with c queued behind a stale entry (wake is coalesced, so cheap).
			kick := c.sendable()
			more := c.rbuf.n > 0
			d.mu.Unlock()
			if kick {
				d.wake()
			}
			if more {
				signal(c.readable)
			}
			return n, nil
		case c.state == stClosed && c.resetErr != nil:
			d.mu.Unlock()
			return 0, c.opErr("read", c.resetErr)
		case c.peerShut&shutdownSend != 0 || c.state == stClosed:
			d.mu.Unlock()
			signal(c.readable) // let concurrent readers see EOF too
			return 0, io.EOF
		}
		d.mu.Unlock()
		if len(p) == 0 {
			return 0, nil
		}
		select {
		case <-c.readable:
		case <-c.rdl.wait():
		case <-c.done:
		}
	}
}

// Write sends p to the guest. It blocks while the send buffer is full (the guest is not
// reading) and respects the write deadline.
func (c *Conn) Write(p []byte) (int, error) {
	d := c.d
	total := 0
	for {
		d.mu.Lock()
		var err error
		switch {
		case c.closed:
			err = net.ErrClosed
		case isClosed(c.wdl.wait()):
			err = os.ErrDeadlineExceeded
		case c.localShut:
			err = errBrokenPipe
		case c.state == stClosed && c.resetErr != nil:
			err = c.resetErr
		case c.state == stClosed:
			err = errConnReset
		case c.peerShut&shutdownRcv != 0:
			err = errBrokenPipe
		}
		if err != nil {
			d.mu.Unlock()
			return total, c.opErr("write", err)
		}
		if len(p) == 0 {
			d.mu.Unlock()
			return total, nil
		}
		if n := c.wbuf.write(p); n > 0 {
			total += n
			p = p[n:]
			d.scheduleLocked(c)
			kick := c.sendable()
			more := c.wbuf.free() > 0
			d.mu.Unlock()
			if kick {
				d.wake()
			}
			if more {
				signal(c.writable)
			}
			if len(p) == 0 {
				return total, nil // written: a close racing with us must not fail it
			}
			continue
		}
		d.mu.Unlock()
		select {
		case <-c.writable:
		case <-c.wdl.wait():
		case <-c.done:
		}
	}
}

// CloseWrite shuts down the sending side: the guest reads EOF after the buffered data.
func (c *Conn) CloseWrite() error {
	d := c.d
	d.mu.Lock()
	switch {
	case c.closed:
		d.mu.Unlock()
		return c.opErr("close", net.ErrClosed)
	case c.localShut || c.state == stClosed:
		c.localShut = true
		d.mu.Unlock()
		signal(c.writable)
		return nil
	}
	c.localShut = true
	c.shutFlags |= shutdownSend
	c.pend |= pendShutdown
	d.scheduleLocked(c)
	d.mu.Unlock()
	signal(c.writable)
	d.wake()
	return nil
}

// Close closes the connection. Buffered data is still delivered, however slowly the guest
// reads it (see lingerExpiredLocked), before the guest is told with a SHUTDOWN; unread
// received data is discarded.
func (c *Conn) Close() error {
	d := c.d
	d.mu.Lock()
	if c.closed {
		d.mu.Unlock()
		return c.opErr("close", net.ErrClosed)
	}
	c.closed = true
	close(c.done)
	if c.state == stEstablished {
		c.fwdCnt += uint32(c.rbuf.n)
		c.rbuf.release()
		if c.peerShut == shutdownRcv|shutdownSend {
			d.abortLocked(c, true)
		} else {
			c.shutFlags = shutdownRcv | shutdownSend
			c.pend |= pendShutdown
			c.heard, c.probed = false, false
			d.scheduleLocked(c)
			c.timer = time.AfterFunc(d.closeTimeout, func() {
				d.mu.Lock()
				d.lingerExpiredLocked(c)
				d.mu.Unlock()
				d.wake()
			})
		}
	} else {
		c.rbuf.release()
	}
	d.mu.Unlock()
	d.wake()
	return nil
}

// lingerExpiredLocked runs when a closed connection's linger timer fires (every
// closeTimeout). Bytes a Write accepted are never dropped while the guest's socket is there
// to take them: a Linux guest reads our RST as a clean EOF, so resetting with data queued
// loses it silently (it did, a fixed 10 s after Close, to guests reading slowly under load).
// With data queued, the connection stays as long as the guest is heard from in each period;
// after a silent period it is asked (CREDIT_REQUEST, which a live Linux socket answers, read
// or not, and a gone one answers with RST), and only a further silent period resets it. With
// nothing queued, it is the wait for the guest's RST after our SHUTDOWN, as in Linux.
func (d *Device) lingerExpiredLocked(c *Conn) {
	if c.state == stClosed {
		return
	}
	if c.wbuf.n > 0 && c.peerShut&shutdownRcv == 0 {
		switch {
		case c.heard:
			c.heard, c.probed = false, false
		case !c.probed:
			c.probed = true
			c.pend |= pendProbe
			d.scheduleLocked(c)
		default:
			d.log.Warn("vhostvsock: the guest stopped answering a closed connection with data still queued for it; resetting",
				"conn", c.key, "queued", c.wbuf.n, "silent_at_least", 2*d.closeTimeout)
			d.abortLocked(c, true)
			return
		}
		if c.timer != nil {
			c.timer.Reset(d.closeTimeout)
		}
		return
	}
	d.abortLocked(c, true)
}

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.isClosed() {
		return c.opErr("set", net.ErrClosed)
	}
	c.rdl.set(t)
	return nil
}

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if c.isClosed() {
		return c.opErr("set", net.ErrClosed)
	}
	c.wdl.set(t)
	return nil
}

func (c *Conn) isClosed() bool { return isClosed(c.done) }
