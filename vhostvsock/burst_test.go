package vhostvsock

import (
	"testing"
	"time"
)

// TestConnectBurst sends many guest REQUESTs at once to a listener nobody accepts from yet
// (the relay's accept loop behind a busy worker) and checks that each one gets exactly one
// explicit answer: a RESPONSE while the device has room for it, an RST beyond MaxConns. A
// REQUEST answered with nothing would leave the guest's connect to time out.
func TestConnectBurst(t *testing.T) {
	for _, tc := range []struct {
		name      string
		n         int
		maxConns  int
		responses int
	}{
		{"1000 within the default MaxConns", 1000, 0, 1000},
		{"300 over MaxConns 200", 300, 200, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newFakeGuest(t, fakeOpts{maxConns: tc.maxConns})
			l, err := g.dev.Listen(5555)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			const base = 70000
			for i := range tc.n {
				g.send(guestHdr(opRequest, uint32(base+i), 5555), nil)
			}
			answers := map[uint32]uint16{}
			responses := 0
			for range tc.n {
				p := g.recv()
				if p.h.Op != opResponse && p.h.Op != opRST || p.h.SrcPort != 5555 {
					t.Fatalf("got %v, want a RESPONSE or RST from port 5555", &p.h)
				}
				if op, ok := answers[p.h.DstPort]; ok {
					t.Fatalf("guest port %d answered twice (%s, then %v)", p.h.DstPort, opNames[op], &p.h)
				}
				answers[p.h.DstPort] = p.h.Op
				if p.h.Op == opResponse {
					responses++
				}
			}
			g.expectNone(100 * time.Millisecond)
			if responses != tc.responses {
				t.Errorf("%d of %d REQUESTs accepted, want %d (the rest refused)", responses, tc.n, tc.responses)
			}
			for i := range responses {
				c, err := l.Accept()
				if err != nil {
					t.Fatalf("Accept %d: %v", i, err)
				}
				port := c.RemoteAddr().(*Addr).Port
				if answers[port] != opResponse {
					t.Fatalf("accepted %s, which the guest was told %s", c.RemoteAddr(), opNames[answers[port]])
				}
				c.Close()
			}
			st := g.dev.Stats()
			if st.Conns != responses {
				t.Errorf("device has %d connections, want %d (closed, waiting for the guest)", st.Conns, responses)
			}
			if want := uint64(tc.n - tc.responses); st.Refused != want {
				t.Errorf("Stats.Refused = %d, want %d (the REQUESTs beyond MaxConns)", st.Refused, want)
			}
		})
	}
}

// TestResetsOutlastRxStarvation closes a listener with a full backlog of connections the
// guest was told RESPONSE for (or not yet), while the guest posts no receive buffers. Every
// one of them must reach the guest as an RST once it refills: an RST dropped there leaves a
// guest socket connected to nothing for good.
func TestResetsOutlastRxStarvation(t *testing.T) {
	const n = 1000
	g := newFakeGuest(t, fakeOpts{})
	l, err := g.dev.Listen(5556)
	if err != nil {
		t.Fatal(err)
	}
	g.do(func() { g.rxHold = true })
	const base = 90000
	for i := range n {
		g.send(guestHdr(opRequest, uint32(base+i), 5556), nil)
	}
	// The ring's first buffers carry RESPONSEs; then the device waits for more.
	responded := map[uint32]bool{}
	for len(g.pkts) > 0 || len(responded) == 0 {
		p := g.recv()
		if p.h.Op != opResponse {
			t.Fatalf("got %v before the listener closed, want a RESPONSE", &p.h)
		}
		responded[p.h.DstPort] = true
	}
	for g.dev.Stats().TxPackets < n { // every REQUEST taken
		time.Sleep(time.Millisecond)
	}
	l.Close()
	g.do(func() { g.rxHold = false; g.postRx() })
	reset := map[uint32]bool{}
	for len(reset) < n {
		var p rxPkt
		select {
		case p = <-g.pkts:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d guest ports got an RST after the listener closed (%d had a RESPONSE); the rest were never told", len(reset), n, len(responded))
		}
		switch {
		case p.h.Op == opResponse && !responded[p.h.DstPort]:
			responded[p.h.DstPort] = true
		case p.h.Op == opRST && !reset[p.h.DstPort]:
			reset[p.h.DstPort] = true
		default:
			t.Fatalf("got %v (port responded %v, reset %v)", &p.h, responded[p.h.DstPort], reset[p.h.DstPort])
		}
	}
	g.expectNone(100 * time.Millisecond)
}
