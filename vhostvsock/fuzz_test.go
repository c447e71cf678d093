package vhostvsock

import (
	"log/slog"
	"path/filepath"
	"testing"

	"lab/vhostvsock/internal/virtq"
)

// FuzzPacket feeds arbitrary tx chains to the packet handler of a device with a listener
// and a few live connections: it must never panic, and never queue more than maxCtrl replies.
func FuzzPacket(f *testing.F) {
	seed := make([]byte, hdrSize+4)
	h := guestHdr(opRW, 1, 5000)
	h.Len = 4
	h.encode(seed)
	f.Add(seed, 1)
	h = guestHdr(opRequest, 1, 5000)
	h.encode(seed)
	f.Add(seed[:hdrSize], 0)
	f.Add([]byte{1, 2, 3}, 2)
	f.Fuzz(func(t *testing.T, b []byte, split int) {
		d, err := New(Config{SocketPath: filepath.Join(t.TempDir(), "s"), GuestCID: fakeCID, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		l, _ := d.Listen(5000)
		defer l.Close()
		d.mu.Lock()
		defer d.mu.Unlock()
		est := d.newConnLocked(connKey{guest: 1, host: 5000}, stEstablished)
		est.peerBufAlloc = 1 << 16
		d.newConnLocked(connKey{guest: 2, host: 6000}, stConnecting)
		var ch virtq.Chain
		// The packet split over up to three readable segments.
		split = max(0, split) % (len(b) + 1)
		ch.Readable = [][]byte{b[:split], b[split:]}
		ch.ReadLen = uint64(len(b))
		for range 3 {
			d.handleTxLocked(&ch)
		}
		if len(d.ctrl) > maxCtrl {
			t.Fatal("control queue unbounded")
		}
		if est.rbuf.n > d.bufSize {
			t.Fatal("receive buffer overrun")
		}
		// Whatever is queued can be written into a receive buffer.
		rx := virtq.Chain{Writable: [][]byte{make([]byte, 100), make([]byte, 3676)}, WriteLen: 3776}
		for range 8 {
			if !d.hasRxWorkLocked() {
				break
			}
			if _, err := d.fillRxLocked(&rx); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func FuzzHeader(f *testing.F) {
	f.Add(make([]byte, hdrSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < hdrSize {
			return
		}
		var h, h2 header
		h.decode(b)
		out := make([]byte, hdrSize)
		h.encode(out)
		h2.decode(out)
		if h != h2 || string(out) != string(b[:hdrSize]) {
			t.Fatal("header does not round-trip")
		}
		_ = h.String()
	})
}
