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
			if n := g.dev.Stats().Conns; n != responses {
				t.Errorf("device has %d connections, want %d (closed, waiting for the guest)", n, responses)
			}
		})
	}
}
