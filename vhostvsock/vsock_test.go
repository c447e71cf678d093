package vhostvsock

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

func guestHdr(op uint16, gport, hport uint32) header {
	return header{SrcCID: fakeCID, DstCID: cidHost, SrcPort: gport, DstPort: hport, Type: typeStream, Op: op, BufAlloc: 1 << 20}
}

func expectOp(t *testing.T, p rxPkt, op uint16, gport, hport uint32) {
	t.Helper()
	if p.h.Op != op || p.h.DstPort != gport || p.h.SrcPort != hport || p.h.DstCID != fakeCID || p.h.SrcCID != cidHost || p.h.Type != typeStream {
		t.Fatalf("got %v, want op %d %d->%d", &p.h, op, hport, gport)
	}
}

// connectGuest opens a guest->host connection through an in-process listener.
func connectGuest(t *testing.T, g *fakeGuest, l net.Listener, gport, hport uint32) net.Conn {
	t.Helper()
	g.send(guestHdr(opRequest, gport, hport), nil)
	expectOp(t, g.recv(), opResponse, gport, hport)
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGuestToHostPingPong(t *testing.T) {
	g := newFakeGuest(t, fakeOpts{})
	l, err := g.dev.Listen(5000)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := g.dev.Listen(5000); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second Listen: %v", err)
	}
	const gp = 2636459617 // guest ports are full u32 values
	c := connectGuest(t, g, l, gp, 5000)
	if got := c.RemoteAddr().String(); got != "vm(3):2636459617" {
		t.Errorf("RemoteAddr = %s", got)
	}
	if got := c.LocalAddr().String(); got != "host(2):5000" {
		t.Errorf("LocalAddr = %s", got)
	}
	g.send(guestHdr(opRW, gp, 5000), []byte("ping"))
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	if _, err := c.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	p := g.recv()
	expectOp(t, p, opRW, gp, 5000)
	if string(p.payload) != "pong" || p.h.FwdCnt != 4 || p.h.BufAlloc != DefaultBufferSize {
		t.Fatalf("got %v %q", &p.h, p.payload)
	}
	g.send(guestHdr(opShutdown, gp, 5000).with(func(h *header) { h.Flags = shutdownRcv | shutdownSend }), nil)
	if n, err := c.Read(buf); err != io.EOF {
		t.Fatalf("Read after SHUTDOWN = %d, %v; want EOF", n, err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("Write after peer SHUTDOWN RCV = %v", err)
	}
	c.Close()
	expectOp(t, g.recv(), opRST, gp, 5000)
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close = %v", err)
	}
}

func (h header) with(fn func(*header)) header { fn(&h); return h }

func TestRefusedAndUnknown(t *testing.T) {
	g := newFakeGuest(t, fakeOpts{})
	// No listener, no UDS: RST.
	g.send(guestHdr(opRequest, 1000, 4000), nil)
	expectOp(t, g.recv(), opRST, 1000, 4000)
	// Packets for unknown connections: RST (but never an RST for an RST).
	g.send(guestHdr(opRW, 1001, 4000), []byte("data"))
	expectOp(t, g.recv(), opRST, 1001, 4000)
	g.send(guestHdr(opRST, 1002, 4000), nil)
	g.send(guestHdr(opCreditUpdate, 1003, 4000), nil)
	expectOp(t, g.recv(), opRST, 1003, 4000)
	// SEQPACKET (type 2) is not implemented: RST.
	l, _ := g.dev.Listen(4001)
	defer l.Close()
	g.send(guestHdr(opRequest, 1004, 4001).with(func(h *header) { h.Type = 2 }), nil)
	p := g.recv()
	if p.h.Op != opRST || p.h.Type != 2 {
		t.Fatalf("got %v", &p.h)
	}
	// Foreign CIDs are dropped silently.
	g.send(guestHdr(opRequest, 1005, 4001).with(func(h *header) { h.SrcCID = 9 }), nil)
	g.send(guestHdr(opRequest, 1006, 4001).with(func(h *header) { h.DstCID = 7 }), nil)
	g.expectNone(100 * time.Millisecond)
}

func TestGuestCreditUpdates(t *testing.T) {
	g := newFakeGuest(t, fakeOpts{bufSize: 64 << 10})
	l, _ := g.dev.Listen(5001)
	defer l.Close()
	c := connectGuest(t, g, l, 7, 5001)
	// Fill our advertised buffer exactly.
	chunk := bytes.Repeat([]byte("a"), 4096)
	for range 16 {
		g.send(guestHdr(opRW, 7, 5001), chunk)
	}
	g.expectNone(50 * time.Millisecond)
	// One byte more than the buffer: the guest broke the credit rules, the connection resets.
	buf := make([]byte, 16<<10)
	n, _ := io.ReadFull(c, buf) // 16 KiB = a quarter
	if n != len(buf) {
		t.Fatal("short read")
	}
	p := g.recv()
	expectOp(t, p, opCreditUpdate, 7, 5001)
	if p.h.FwdCnt != 16<<10 || p.h.BufAlloc != 64<<10 {
		t.Fatalf("credit update %v", &p.h)
	}
	// A CREDIT_REQUEST is answered.
	g.send(guestHdr(opCreditRequest, 7, 5001), nil)
	p = g.recv()
	expectOp(t, p, opCreditUpdate, 7, 5001)
	// Overrun: 48 KiB buffered, 16 KiB free; send 20 KiB.
	g.send(guestHdr(opRW, 7, 5001), make([]byte, 20<<10))
	expectOp(t, g.recv(), opRST, 7, 5001)
	// The data received before the reset is still readable, then EOF.
	rest, err := io.ReadAll(c)
	if err != nil || len(rest) != 48<<10 {
		t.Fatalf("ReadAll after reset = %d, %v", len(rest), err)
	}
}

func TestHostToGuestCredit(t *testing.T) {
	g := newFakeGuest(t, fakeOpts{})
	l, _ := g.dev.Listen(5002)
	defer l.Close()
	g.send(guestHdr(opRequest, 8, 5002).with(func(h *header) { h.BufAlloc = 5000 }), nil)
	expectOp(t, g.recv(), opResponse, 8, 5002)
	c, _ := l.Accept()
	data := make([]byte, 20000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	go c.Write(data)
	var got []byte
	// Credit 5000: packets split to the rx buffer (3776-44), never more than 5000 in flight.
	for len(got) < 5000 {
		p := g.recv()
		expectOp(t, p, opRW, 8, 5002)
		if len(p.payload) > rxBufSize-hdrSize {
			t.Fatalf("payload %d exceeds the rx buffer", len(p.payload))
		}
		got = append(got, p.payload...)
	}
	if len(got) != 5000 {
		t.Fatalf("got %d bytes with 5000 credit", len(got))
	}
	g.expectNone(100 * time.Millisecond)
	// The guest consumed 5000 and grows its buffer: the rest flows.
	g.send(guestHdr(opCreditUpdate, 8, 5002).with(func(h *header) { h.BufAlloc = 1 << 20; h.FwdCnt = 5000 }), nil)
	for len(got) < len(data) {
		p := g.recv()
		expectOp(t, p, opRW, 8, 5002)
		got = append(got, p.payload...)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("data mismatch")
	}
}

func TestHalfClose(t *testing.T) {
	g := newFakeGuest(t, fakeOpts{})
	l, _ := g.dev.Listen(5003)
	defer l.Close()
	c := connectGuest(t, g, l, 9, 5003).(*Conn)
	c.Write([]byte("bye"))
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	p := g.recv()
	expectOp(t, p, opRW, 9, 5003)
	p = g.recv()
	expectOp(t, p, opShutdown, 9, 5003)
	if p.h.Flags != shutdownSend {
		t.Fatalf("SHUTDOWN flags %d", p.h.Flags)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("Write after CloseWrite = %v", err)
	}
	// The host still reads.
	g.send(guestHdr(opRW, 9, 5003), []byte("more"))
	g.send(guestHdr(opShutdown, 9, 5003).with(func(h *header) { h.Flags = shutdownSend }), nil)
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "more" {
		t.Fatalf("ReadAll = %q, %v", b, err)
	}
	c.Close()
	p = g.recv()
	expectOp(t, p, opShutdown, 9, 5003)
	if p.h.Flags != shutdownRcv|shutdownSend {
		t.Fatalf("SHUTDOWN flags %d", p.h.Flags)
	}
	g.send(guestHdr(opRST, 9, 5003), nil)
	g.expectNone(50 * time.Millisecond)
	g.dev.mu.Lock()
	n := len(g.dev.conns)
	g.dev.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d connections left", n)
	}
}

func TestDialGuest(t *testing.T) {
	g := newFakeGuest(t, fakeOpts{})
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := g.dev.Dial(context.Background(), 77)
		ch <- res{c, err}
	}()
	p := g.recv()
	if p.h.Op != opRequest || p.h.DstPort != 77 {
		t.Fatalf("got %v", &p.h)
	}
	hp := p.h.SrcPort
	g.send(guestHdr(opResponse, 77, hp), nil)
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.c.RemoteAddr().String() != "vm(3):77" {
		t.Fatalf("RemoteAddr %v", r.c.RemoteAddr())
	}
	r.c.Write([]byte("hi"))
	p = g.recv()
	expectOp(t, p, opRW, 77, hp)

	// Refused.
	go func() {
		c, err := g.dev.Dial(context.Background(), 78)
		ch <- res{c, err}
	}()
	p = g.recv()
	g.send(guestHdr(opRST, 78, p.h.SrcPort), nil)
	if r := <-ch; !errors.Is(r.err, syscall.ECONNREFUSED) {
		t.Fatalf("Dial to a closed port = %v", r.err)
	}
	// Timeout: the guest never answers.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := g.dev.Dial(ctx, 79); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial without answer = %v", err)
	}
	p = g.recv()
	if p.h.Op != opRequest {
		t.Fatalf("got %v", &p.h)
	}
	expectOp(t, g.recv(), opRST, 79, p.h.SrcPort)
}

func TestSplitToRxBuffer(t *testing.T) {
	g := newFakeGuest(t, fakeOpts{})
	l, _ := g.dev.Listen(5004)
	defer l.Close()
	c := connectGuest(t, g, l, 10, 5004)
	data := bytes.Repeat([]byte("0123456789"), 10000)
	go c.Write(data)
	var got []byte
	for len(got) < len(data) {
		p := g.recv()
		expectOp(t, p, opRW, 10, 5004)
		if len(p.payload) == 0 || len(p.payload) > rxBufSize-hdrSize {
			t.Fatalf("payload of %d bytes", len(p.payload))
		}
		got = append(got, p.payload...)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("mismatch")
	}
}

// TestCloseDeliversToASlowReader: Close with far more queued than the guest's credit, and a
// guest that takes it slowly, a linger period or more per credit's worth. Nothing may be
// dropped while the guest answers: the linger timer used to reset the connection a fixed 10 s
// after Close, queued data or not, and a Linux guest reads an RST as a clean EOF, so under
// load an echo of 1 MiB came back short with no error (TestIntegration/Concurrent50). The
// test fires the timer's expiry itself; the real timer is an hour away.
func TestCloseDeliversToASlowReader(t *testing.T) {
	// closed gives a host connection closed with n bytes queued for a guest with credit.
	closed := func(t *testing.T, gport, credit uint32, n int) (*fakeGuest, *Conn, []byte) {
		g := newFakeGuest(t, fakeOpts{})
		g.dev.closeTimeout = time.Hour
		l, err := g.dev.Listen(5006)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		g.send(guestHdr(opRequest, gport, 5006).with(func(h *header) { h.BufAlloc = credit }), nil)
		expectOp(t, g.recv(), opResponse, gport, 5006)
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*7 + i>>10)
		}
		if _, err := c.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		return g, c.(*Conn), data
	}
	expire := func(g *fakeGuest, c *Conn) {
		g.dev.mu.Lock()
		g.dev.lingerExpiredLocked(c)
		g.dev.mu.Unlock()
		g.dev.wake()
	}
	heard := func(g *fakeGuest, c *Conn) bool {
		g.dev.mu.Lock()
		defer g.dev.mu.Unlock()
		return c.heard
	}
	live := func(g *fakeGuest, c *Conn) bool {
		g.dev.mu.Lock()
		defer g.dev.mu.Unlock()
		return g.dev.conns[c.key] == c
	}

	t.Run("reading", func(t *testing.T) {
		const credit = 8192
		g, c, data := closed(t, 11, credit, 64<<10)
		var got []byte
		for len(got) < len(data) {
			p := g.recv()
			expectOp(t, p, opRW, 11, 5006)
			got = append(got, p.payload...)
			if len(got)%credit != 0 || len(got) == len(data) {
				continue
			}
			// The guest read its credit's worth and says so; the next packet shows the device
			// heard it. Then a whole linger period passes before the guest reads again.
			g.send(guestHdr(opCreditUpdate, 11, 5006).with(func(h *header) { h.BufAlloc = credit; h.FwdCnt = uint32(len(got)) }), nil)
			p = g.recv()
			expectOp(t, p, opRW, 11, 5006)
			got = append(got, p.payload...)
			expire(g, c)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("the guest got %d bytes, not the %d written", len(got), len(data))
		}
		p := g.recv()
		expectOp(t, p, opShutdown, 11, 5006)
		if p.h.Flags != shutdownRcv|shutdownSend {
			t.Fatalf("SHUTDOWN flags %d", p.h.Flags)
		}
		// Everything delivered: a period without the guest's RST ends it, as before.
		expire(g, c)
		expectOp(t, g.recv(), opRST, 11, 5006)
		if live(g, c) {
			t.Fatal("the connection outlived its linger")
		}
	})

	t.Run("alive but not reading", func(t *testing.T) {
		const credit = 4096
		g, c, _ := closed(t, 12, credit, 16<<10)
		for n := 0; n < credit; {
			p := g.recv()
			expectOp(t, p, opRW, 12, 5006)
			n += len(p.payload)
		}
		// A silent period: the device asks whether the guest is still there.
		expire(g, c)
		expectOp(t, g.recv(), opCreditRequest, 12, 5006)
		// The guest's socket answers (a Linux guest does, reading or not): data stays queued.
		g.send(guestHdr(opCreditUpdate, 12, 5006).with(func(h *header) { h.BufAlloc = credit }), nil)
		for deadline := time.Now().Add(10 * time.Second); !heard(g, c); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the device did not take the guest's CREDIT_UPDATE within 10s")
			}
		}
		expire(g, c)
		if !live(g, c) {
			t.Fatal("a guest that answered lost its queued data")
		}
		// Silent again: asked again, then, with no answer for a whole period, reset.
		expire(g, c)
		expectOp(t, g.recv(), opCreditRequest, 12, 5006)
		expire(g, c)
		expectOp(t, g.recv(), opRST, 12, 5006)
		if live(g, c) {
			t.Fatal("a guest that stopped answering kept the connection")
		}
	})
}
