package vhostvsock

import (
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"
)

// synthBytes is what one iteration of the synthetic benchmark moves.
const synthBytes = 32 << 20

// BenchmarkSynthetic drives the device through its virtqueues with no VM: the fake
// front-end (fakefront_test.go) plays the guest driver in this process, over a real
// vhost-user socket, shared memory and eventfds, posting 3776-byte receive buffers as
// Linux 6.1 does and honouring the device's credit. The host end is the device's own
// net.Conn, written or read in 4 KiB or 64 KiB calls (iperf-vsock's -l). Compare with
// rust-vmm's vhost-device-vsock in DESIGN (userspace vsock device).
//
//	go test -run '^$' -bench Synthetic ./vhostvsock
func BenchmarkSynthetic(b *testing.B) {
	for _, size := range []int{4 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("host-to-guest/%dKiB", size>>10), func(b *testing.B) { synthHostToGuest(b, size) })
		b.Run(fmt.Sprintf("guest-to-host/%dKiB", size>>10), func(b *testing.B) { synthGuestToHost(b, size) })
	}
}

// synthConnect opens a guest->host connection and returns the host end; the guest's
// handler is set before the request goes out.
func synthConnect(b *testing.B, g *fakeGuest, port uint32, handler func(*fakeGuest, rxPkt)) io.ReadWriteCloser {
	l, err := g.dev.Listen(port)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	set := make(chan struct{})
	g.do(func() { g.handler = handler; close(set) })
	<-set
	h := guestHdr(opRequest, 7, port)
	h.BufAlloc = 1 << 30
	g.send(h, nil)
	c, err := l.Accept()
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func rawPkt(h header, payload []byte) []byte {
	p := make([]byte, hdrSize+len(payload))
	h.Len = uint32(len(payload))
	h.encode(p)
	copy(p[hdrSize:], payload)
	return p
}

func synthHostToGuest(b *testing.B, size int) {
	g := newFakeGuest(b, fakeOpts{qsize: 256})
	var got atomic.Int64
	var want atomic.Int64
	done := make(chan struct{}, 1)
	var fwd uint32
	c := synthConnect(b, g, 5100, func(g *fakeGuest, p rxPkt) {
		if p.h.Op != opRW {
			return
		}
		n := got.Add(int64(len(p.payload)))
		// Consumed at once: tell the device every MiB, as a guest's reader would.
		if fwd += uint32(len(p.payload)); fwd%(1<<20) < uint32(len(p.payload)) {
			h := guestHdr(opCreditUpdate, 7, 5100)
			h.BufAlloc, h.FwdCnt = 1<<30, fwd
			g.pendingTx = append(g.pendingTx, rawPkt(h, nil))
		}
		if w := want.Load(); w > 0 && n >= w {
			want.Store(0)
			done <- struct{}{}
		}
	})
	defer c.Close()
	buf := make([]byte, size)
	b.SetBytes(synthBytes)
	for b.Loop() {
		want.Store(got.Load() + synthBytes)
		for n := 0; n < synthBytes; n += size {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-done:
		case <-time.After(time.Minute):
			b.Fatalf("the guest received %d bytes", got.Load())
		}
	}
}

func synthGuestToHost(b *testing.B, size int) {
	g := newFakeGuest(b, fakeOpts{qsize: 256})
	pkt := rawPkt(guestHdr(opRW, 7, 5101), make([]byte, size))
	// The guest side, in the front-end's loop: send while the host's credit allows.
	var sent, toSend uint64
	var peerAlloc, peerFwd uint32
	pump := func(g *fakeGuest) {
		for toSend > 0 && uint32(sent)-peerFwd+uint32(size) <= peerAlloc {
			g.pendingTx = append(g.pendingTx, pkt)
			sent += uint64(size)
			toSend -= uint64(size)
		}
	}
	c := synthConnect(b, g, 5101, func(g *fakeGuest, p rxPkt) {
		switch p.h.Op {
		case opResponse, opCreditUpdate:
			peerAlloc, peerFwd = p.h.BufAlloc, p.h.FwdCnt
			pump(g)
		}
	})
	defer c.Close()
	buf := make([]byte, 256<<10)
	b.SetBytes(synthBytes)
	for b.Loop() {
		g.do(func() { toSend += synthBytes; pump(g) })
		for n := 0; n < synthBytes; {
			m, err := c.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			n += m
		}
	}
}
