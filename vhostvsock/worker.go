package vhostvsock

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"

	"lab/vhostvsock/internal/virtq"
)

var aLongTimeAgo = time.Unix(1, 0)

// Limits of one worker pass, so one direction cannot starve the other.
const (
	txBatch = 64
	rxBatch = 64
	// maxCtrl bounds replies not tied to a connection (RSTs to unknown connections). When the
	// guest does not give us receive buffers for them, we stop taking its transmissions.
	maxCtrl = 256
	// Tx completions only free the guest's buffers, so their interrupts are coalesced: one
	// per txIrqBatch chains or after txIrqDelay, whichever comes first. Under TCG every
	// interrupt costs the guest a trip through its handler and a worker wake-up.
	txIrqDelay = time.Millisecond
)

var txIrqBatch = 16

// worker runs the rings: it sleeps in epoll on the kick eventfds and the wake eventfd, and
// processes both queues under d.mu. No descriptor chain is held across an unlock.
func (d *Device) worker(f *frontend) {
	events := make([]unix.EpollEvent, 8)
	var buf [8]byte
	for {
		d.mu.Lock()
		timeout := -1
		if f.txIrqPending {
			timeout = int(txIrqDelay / time.Millisecond) // deliver the coalesced tx interrupt
		}
		d.mu.Unlock()
		n, err := unix.EpollWait(f.epfd, events, timeout)
		if err != nil && err != unix.EINTR {
			d.mu.Lock()
			if f.err == nil {
				f.err = err
			}
			d.mu.Unlock()
			return
		}
		d.mu.Lock()
		if f.stop {
			d.mu.Unlock()
			return
		}
		for _, ev := range events[:max(n, 0)] {
			switch i := int(ev.Fd); i {
			case wakeTag:
				// Drain first, then clear: a wake() between the two finds the flag still set
				// and writes nothing, but its work is seen by the pass below (it was done
				// under d.mu, which this loop holds). Clearing before draining would let such
				// a wake's write be swallowed here with the flag left set, and every later
				// wake() would then be a no-op: host writes stall until the guest kicks.
				unix.Read(d.wakeFD, buf[:])
				d.wakePending.Store(false)
			default:
				if i < nQueues && f.vq[i].kick >= 0 {
					unix.Read(f.vq[i].kick, buf[:])
					d.stats.kicks.Add(1)
				}
			}
		}
		// One pass at a time, releasing the lock in between so readers and writers are
		// never kept out for long.
		for d.passLocked(f) && !f.stop {
			d.mu.Unlock()
			d.mu.Lock()
		}
		d.mu.Unlock()
	}
}

// fail stops the device after the guest broke a ring.
func (d *Device) failLocked(f *frontend, err error) {
	if f.err != nil {
		return
	}
	f.err = err
	d.log.Error("vhostvsock: stopping the device", "err", err)
	for i := range f.vq {
		if f.vq[i].errFD >= 0 {
			var one = [8]byte{1}
			unix.Write(f.vq[i].errFD, one[:])
		}
	}
	// Unblock Serve: the front-end connection is closed so QEMU sees the back-end go away.
	f.conn.Close()
}

func (d *Device) queue(f *frontend, i int) *virtq.Queue {
	if f.err != nil {
		return nil
	}
	vr := &f.vq[i]
	if !vr.enabled || !vr.started {
		return nil
	}
	return vr.q
}

// passLocked moves up to a batch of packets each way, publishes each used ring once, sends
// at most one interrupt per queue, and reports whether another pass may find work.
func (d *Device) passLocked(f *frontend) bool {
	if f.err != nil {
		return false
	}
	d.stats.passes.Add(1)
	notify := [nQueues]bool{}
	progress := false
	defer func() {
		var one = [8]byte{1}
		for i, n := range notify {
			if n && f.vq[i].call >= 0 {
				unix.Write(f.vq[i].call, one[:])
				d.stats.interrupts.Add(1)
			}
		}
	}()
	if q := d.queue(f, txQ); q != nil {
		for i := 0; i < txBatch && len(d.ctrl) < maxCtrl; i++ {
			ok, err := q.Pop(&f.txChain)
			if err != nil {
				d.failLocked(f, err)
				return false
			}
			if !ok {
				break
			}
			d.handleTxLocked(&f.txChain)
			q.Push(f.txChain.Head, 0)
			f.txUnsignalled++
			progress = true
		}
		if q.Flush() && !f.txIrqPending {
			f.txIrqPending, f.txIrqSince = true, time.Now()
		}
		if f.txIrqPending && (f.txUnsignalled >= txIrqBatch || time.Since(f.txIrqSince) >= txIrqDelay) {
			notify[txQ] = true
			f.txIrqPending, f.txUnsignalled = false, 0
		}
		if len(d.ctrl) < maxCtrl {
			more, err := q.ArmNotify()
			if err != nil {
				d.failLocked(f, err)
				return false
			}
			progress = progress || more
		}
	}
	if q := d.queue(f, rxQ); q != nil {
		for i := 0; i < rxBatch && d.hasRxWorkLocked(); i++ {
			ok, err := q.Pop(&f.rxChain)
			if err != nil {
				d.failLocked(f, err)
				return false
			}
			if !ok {
				break
			}
			n, err := d.fillRxLocked(&f.rxChain)
			if err != nil {
				d.failLocked(f, err)
				return false
			}
			q.Push(f.rxChain.Head, n)
			progress = true
		}
		notify[rxQ] = q.Flush()
		if d.hasRxWorkLocked() {
			more, err := q.ArmNotify()
			if err != nil {
				d.failLocked(f, err)
				return false
			}
			progress = progress || more
		}
	}
	return progress
}

// handleTxLocked handles one packet from the guest.
func (d *Device) handleTxLocked(ch *virtq.Chain) {
	var hb [hdrSize]byte
	if ch.ReadLen < hdrSize || gather(hb[:], ch.Readable) < hdrSize {
		d.log.Debug("vhostvsock: dropping a tx chain shorter than a header", "len", ch.ReadLen)
		return
	}
	var h header
	h.decode(hb[:])
	d.stats.txPackets.Add(1)
	d.stats.txBytes.Add(uint64(h.Len))
	if uint64(h.Len) > ch.ReadLen-hdrSize || h.Len > maxPayload {
		d.log.Debug("vhostvsock: dropping a packet whose length exceeds its buffer", "hdr", h.String(), "buf", ch.ReadLen)
		return
	}
	if h.SrcCID != uint64(d.cfg.GuestCID) || h.DstCID != cidHost {
		d.log.Debug("vhostvsock: dropping a packet with foreign addresses", "hdr", h.String())
		return
	}
	if h.Type != typeStream {
		if h.Op != opRST {
			d.replyRSTLocked(&h)
		}
		return
	}
	key := connKey{guest: h.SrcPort, host: h.DstPort}
	c := d.conns[key]
	if c == nil {
		switch h.Op {
		case opRequest:
			d.acceptLocked(&h)
		case opRST:
		default:
			d.replyRSTLocked(&h)
		}
		return
	}
	if c.wbuf.n > 0 && c.credit() == 0 {
		d.stats.creditWaits.Add(1) // output was waiting for this packet's credit
	}
	c.heard = true // the guest's socket is there (a closed connection's linger, see lingerExpiredLocked)
	c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
	switch h.Op {
	case opRequest:
		// A second REQUEST on a live connection: the guest lost track of it.
		d.abortLocked(c, true)
		return
	case opResponse:
		if c.state != stConnecting {
			d.abortLocked(c, true)
			return
		}
		c.state = stEstablished
		close(c.established)
	case opRST:
		if c.state == stConnecting {
			c.dialErr = errConnRefused
		}
		d.abortLocked(c, false)
		return
	case opRW:
		if c.state != stEstablished {
			d.abortLocked(c, true)
			return
		}
		if c.closed || c.peerShut&shutdownSend != 0 {
			// Nobody will read it: count it as consumed so the guest's credit keeps moving.
			c.fwdCnt += h.Len
			c.maybeCreditLocked()
			break
		}
		if int(h.Len) > c.rbuf.free() {
			d.log.Warn("vhostvsock: guest overran the receive buffer; resetting", "conn", c.key, "len", h.Len, "free", c.rbuf.free())
			d.abortLocked(c, true)
			return
		}
		var r segReader
		r.reset(ch.Readable, hdrSize)
		for rest := int(h.Len); rest > 0; {
			s := r.next(rest)
			if s == nil {
				break
			}
			c.rbuf.write(s)
			rest -= len(s)
		}
		if h.Len > 0 {
			signal(c.readable)
		}
	case opCreditUpdate:
	case opCreditRequest:
		c.pend |= pendCredit
	case opShutdown:
		c.peerShut |= h.Flags & (shutdownRcv | shutdownSend)
		if c.peerShut&shutdownRcv != 0 {
			c.wbuf.discard(c.wbuf.n)
			signal(c.writable)
		}
		signal(c.readable)
		if c.peerShut == shutdownRcv|shutdownSend && c.closed {
			d.abortLocked(c, true)
			return
		}
	default:
		d.abortLocked(c, true)
		return
	}
	signal(c.writable) // credit may have grown
	d.scheduleLocked(c)
}

// acceptLocked handles a REQUEST for an unknown connection.
func (d *Device) acceptLocked(h *header) {
	if d.onRequest != nil {
		d.onRequest(h.DstPort)
	}
	key := connKey{guest: h.SrcPort, host: h.DstPort}
	if len(d.conns) >= d.cfg.MaxConns {
		// The guest's connect fails with ECONNRESET, as for a port nobody listens on: only
		// this log and Stats.Refused tell the two apart.
		d.stats.refused.Add(1)
		if !d.atLimit {
			d.atLimit = true
			d.log.Warn("vhostvsock: connection limit reached: refusing the guest's new connections (it sees \"connection reset by peer\") until some close",
				"limit", d.cfg.MaxConns, "port", h.DstPort)
		}
		d.replyRSTLocked(h)
		return
	}
	d.atLimit = false
	if l := d.listeners[h.DstPort]; l != nil {
		c := d.newConnLocked(key, stEstablished)
		c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
		select {
		case l.ch <- c:
			close(c.established)
			c.pend |= pendResponse
			d.scheduleLocked(c)
		default:
			d.log.Warn("vhostvsock: accept backlog full; refusing", "port", h.DstPort)
			delete(d.conns, key)
			d.replyRSTLocked(h)
		}
		return
	}
	if d.cfg.UDSPath != "" && !d.closed {
		c := d.newConnLocked(key, stConnectingOut)
		c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
		d.wg.Add(1)
		go d.dialUDS(c)
		return
	}
	d.replyRSTLocked(h)
}

// replyRSTLocked queues an RST answering h.
func (d *Device) replyRSTLocked(h *header) {
	if len(d.ctrl) >= maxCtrl {
		return
	}
	d.ctrl = append(d.ctrl, header{
		SrcCID: cidHost, DstCID: h.SrcCID, SrcPort: h.DstPort, DstPort: h.SrcPort,
		Type: h.Type, Op: opRST,
	})
}

func (d *Device) hasRxWorkLocked() bool { return len(d.ctrl) > 0 || d.peekReadyLocked() != nil }

// peekReadyLocked drops connections that no longer have anything to send from the head of
// the ready queue and returns the first one that has.
func (d *Device) peekReadyLocked() *Conn {
	for d.ready.n > 0 {
		c := d.ready.buf[d.ready.head]
		if c.sendable() {
			return c
		}
		d.ready.pop()
		c.queued = false
	}
	return nil
}

// fillRxLocked writes one packet into a receive chain and returns the bytes written.
func (d *Device) fillRxLocked(ch *virtq.Chain) (uint32, error) {
	if ch.ReadLen != 0 || ch.WriteLen < hdrSize {
		return 0, errors.New("vhostvsock: receive buffer is not a writable chain of at least 44 bytes")
	}
	var w segWriter
	w.reset(ch.Writable)
	var hb [hdrSize]byte
	if len(d.ctrl) > 0 {
		h := d.ctrl[0]
		copy(d.ctrl, d.ctrl[1:])
		d.ctrl = d.ctrl[:len(d.ctrl)-1]
		h.encode(hb[:])
		w.write(hb[:])
		return uint32(w.n), nil
	}
	if c := d.peekReadyLocked(); c != nil {
		d.ready.pop()
		c.queued = false
		room := min(ch.WriteLen-hdrSize, maxPayload)
		h, payload, ok := c.nextPacketLocked(int(room))
		if !ok {
			// Only data is pending and the buffer has no room beyond a header: hand the
			// buffer back empty (the driver drops it) rather than stall.
			d.scheduleLocked(c)
			return 0, nil
		}
		h.encode(hb[:])
		w.write(hb[:])
		d.stats.rxPackets.Add(1)
		d.stats.rxBytes.Add(uint64(payload))
		if payload > 0 {
			for rest := payload; rest > 0; {
				s := c.wbuf.peek(rest)
				w.write(s)
				c.wbuf.discard(len(s))
				rest -= len(s)
			}
			c.txCnt += uint32(payload)
			signal(c.writable)
		}
		if h.Op == opRST {
			d.removeLocked(c)
		} else {
			d.scheduleLocked(c)
		}
		return uint32(w.n), nil
	}
	return 0, errors.New("vhostvsock: internal error: no packet to send")
}

// resetAllLocked fails every connection (the front-end is gone or the device closes).
func (d *Device) resetAllLocked(err error) {
	for _, c := range d.conns {
		if c.state == stConnecting || c.state == stConnectingOut {
			c.dialErr = err
		}
		c.resetErr = err
		d.abortLocked(c, false)
	}
	d.ctrl = d.ctrl[:0]
	for d.ready.n > 0 {
		d.ready.pop().queued = false
	}
}

// connQueue is a FIFO ring of connections with pending output.
type connQueue struct {
	buf  []*Conn
	head int
	n    int
}

func (q *connQueue) push(c *Conn) {
	if q.n == len(q.buf) {
		nb := make([]*Conn, max(16, 2*len(q.buf)))
		for i := range q.n {
			nb[i] = q.buf[(q.head+i)%len(q.buf)]
		}
		q.buf, q.head = nb, 0
	}
	q.buf[(q.head+q.n)%len(q.buf)] = c
	q.n++
}

func (q *connQueue) pop() *Conn {
	c := q.buf[q.head]
	q.buf[q.head] = nil
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	return c
}
