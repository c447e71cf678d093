package vhostvsock

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/nettest"
)

// The reflector turns the fake guest into a loopback: a host Dial to guest port P is
// reflected as a new guest connection to host port Q, and every packet of one connection is
// re-sent on the other with the same op, flags, credit fields and payload. The two host
// conns are then connected end to end through the device, with the guest's flow control
// being exactly the other host conn's.

type reflKey struct{ host, guest uint32 }

type reflector struct {
	q        uint32
	next     uint32
	peer     map[reflKey]reflKey // both directions
	mu       sync.Mutex
	forwards int
	trace    []string
}

func startReflector(g *fakeGuest, q uint32) *reflector {
	r := &reflector{q: q, next: 40000, peer: map[reflKey]reflKey{}}
	done := make(chan struct{})
	g.do(func() { g.handler = r.handle; close(done) })
	<-done
	return r
}

func (g *fakeGuest) sendNow(h header, payload []byte) {
	b := make([]byte, hdrSize+len(payload))
	h.SrcCID, h.DstCID, h.Type, h.Len = fakeCID, cidHost, typeStream, uint32(len(payload))
	h.encode(b)
	copy(b[hdrSize:], payload)
	g.pendingTx = append(g.pendingTx, b)
}

func (r *reflector) handle(g *fakeGuest, p rxPkt) {
	r.mu.Lock()
	r.trace = append(r.trace, p.h.String())
	r.mu.Unlock()
	from := reflKey{host: p.h.SrcPort, guest: p.h.DstPort}
	if p.h.Op == opRequest {
		b := reflKey{host: r.q, guest: r.next}
		r.next++
		r.peer[from], r.peer[b] = b, from
		h := p.h
		h.SrcPort, h.DstPort = b.guest, b.host
		g.sendNow(h, nil)
		return
	}
	to, ok := r.peer[from]
	if !ok {
		return
	}
	h := p.h
	h.SrcPort, h.DstPort = to.guest, to.host
	g.sendNow(h, p.payload)
	if p.h.Op == opRST {
		delete(r.peer, from)
		delete(r.peer, to)
	}
}

// pairMaker returns a nettest.MakePipe over the reflector.
func pairMaker(t *testing.T, g *fakeGuest) nettest.MakePipe {
	const q = 6000
	l, err := g.dev.Listen(q)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	r := startReflector(g, q)
	t.Cleanup(func() {
		if t.Failed() {
			r.mu.Lock()
			var sel []string
			for _, l := range r.trace {
				if strings.Contains(l, "3:102 ") || strings.Contains(l, "3:40001 ") {
					sel = append(sel, l)
				}
			}
			if len(sel) > 80 {
				sel = sel[len(sel)-80:]
			}
			t.Logf("packets of the second pair:\n%s", strings.Join(sel, "\n"))
			r.mu.Unlock()
		}
	})
	port := uint32(100)
	return func() (net.Conn, net.Conn, func(), error) {
		port++
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c1, err := g.dev.Dial(ctx, port)
		if err != nil {
			return nil, nil, nil, err
		}
		c2, err := l.Accept()
		if err != nil {
			return nil, nil, nil, err
		}
		return c1, c2, func() { c1.Close(); c2.Close() }, nil
	}
}

func TestNettestConn(t *testing.T) {
	g := newFakeGuest(t, fakeOpts{})
	nettest.TestConn(t, pairMaker(t, g))
}

func TestNettestConnNoEventIdxNoIndirect(t *testing.T) {
	g := newFakeGuest(t, fakeOpts{noEventIdx: true, noIndirect: true, base: 65530})
	nettest.TestConn(t, pairMaker(t, g))
}

// copyAndHash sends n random bytes from w to r and compares sha256 on both ends.
func copyAndHash(t *testing.T, w, r net.Conn, n int64, readDelay time.Duration) {
	t.Helper()
	src := io.LimitReader(rand.NewChaCha8([32]byte{byte(n)}), n)
	hw := sha256.New()
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(w, io.TeeReader(src, hw))
		if err == nil {
			err = w.(*Conn).CloseWrite()
		}
		errc <- err
	}()
	hr := sha256.New()
	var got int64
	buf := make([]byte, 64<<10)
	for {
		if readDelay > 0 {
			time.Sleep(readDelay)
		}
		k, err := r.Read(buf)
		hr.Write(buf[:k])
		got += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Errorf("read: %v", err)
			return
		}
	}
	if err := <-errc; err != nil {
		t.Errorf("write: %v", err)
	}
	if got != n || !bytes.Equal(hw.Sum(nil), hr.Sum(nil)) {
		t.Errorf("got %d bytes (want %d), hashes equal: %v", got, n, bytes.Equal(hw.Sum(nil), hr.Sum(nil)))
	}
}

func TestBulkBothWays(t *testing.T) {
	for _, o := range []fakeOpts{{}, {noEventIdx: true}, {noIndirect: true, base: 65500}} {
		g := newFakeGuest(t, o)
		mk := pairMaker(t, g)
		c1, c2, stop, err := mk()
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); copyAndHash(t, c1, c2, 16<<20, 0) }()
		go func() { defer wg.Done(); copyAndHash(t, c2, c1, 16<<20, 0) }()
		wg.Wait()
		stop()
	}
}

func TestConcurrentConnsAndSlowReader(t *testing.T) {
	g := newFakeGuest(t, fakeOpts{})
	mk := pairMaker(t, g)
	// One connection with a very slow reader must not stall the others.
	s1, s2, sstop, err := mk()
	if err != nil {
		t.Fatal(err)
	}
	defer sstop()
	slowDone := make(chan struct{})
	go func() { defer close(slowDone); copyAndHash(t, s1, s2, 2<<20, 20*time.Millisecond) }()

	var wg sync.WaitGroup
	for i := range 50 {
		c1, c2, stop, err := mk()
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer stop()
			copyAndHash(t, c1, c2, int64(256<<10+i*1000), 0)
		}()
	}
	wg.Wait()
	select {
	case <-slowDone:
		t.Log("slow reader finished before the others (timing only)")
	default:
	}
	<-slowDone
}
