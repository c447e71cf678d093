package vhostvsock

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	vu "lab/vhostvsock/internal/vhostuser"
	"lab/vhostvsock/internal/virtq"
)

func TestGetConfigBytes(t *testing.T) {
	g := newFakeGuest(t, fakeOpts{})
	for _, tc := range []struct {
		off, size uint32
		want      []byte
	}{
		{0, 8, []byte{0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0}},
		{0, 4, []byte{0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0}},
		{4, 4, []byte{4, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{6, 4, []byte{6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}, // beyond the space: zero-sized = error
	} {
		got := g.call2(vu.GetConfig, vu.ConfigReq{Offset: tc.off, Size: tc.size, Data: make([]byte, tc.size)}.Marshal(nil))
		if !bytes.Equal(got, tc.want) {
			t.Errorf("GET_CONFIG off=%d size=%d = %x, want %x", tc.off, tc.size, got, tc.want)
		}
	}
	// Unknown request with NEED_REPLY: a failure ack, and the session goes on.
	g.must(g.fc.Write(vu.Request(99), vu.FlagVersion|vu.FlagNeedReply, nil))
	m, err := g.fc.Read()
	if v, _ := vu.U64(m.Payload); err != nil || m.Request != 99 || v == 0 {
		t.Fatalf("unknown request ack: %v %v %d", err, m.Request, v)
	}
	if f, _ := vu.U64(g.call2(vu.GetFeatures, nil)); f&vu.FeatureVersion1 == 0 {
		t.Fatal("session broken after an unknown request")
	}
	// Without NEED_REPLY there is no way to report it: the back-end stops.
	g.serveErrWant = func(err error) bool { return err != nil }
	g.request(vu.Request(99), nil)
	select {
	case err := <-g.serveErr:
		if err == nil {
			t.Fatal("Serve returned nil for an unsupported request")
		}
		g.serveErr <- err
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not stop")
	}
}

// rawFront connects a bare front-end (no guest) to a fresh device.
func rawFront(t *testing.T) (*Device, *vu.Conn, chan error) {
	dir := t.TempDir()
	dev, err := New(Config{SocketPath: filepath.Join(dir, "s"), GuestCID: 5, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	errc := make(chan error, 1)
	go func() { errc <- dev.Serve(context.Background()) }()
	uc, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: filepath.Join(dir, "s"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	return dev, vu.NewConn(uc), errc
}

func TestFeatureNegotiation(t *testing.T) {
	for name, feat := range map[string]uint64{
		"no VERSION_1":    vu.FeatureProtocolFeatures,
		"ACCESS_PLATFORM": vu.FeatureVersion1 | vu.FeatureAccessPlatform,
		"PACKED":          vu.FeatureVersion1 | vu.FeatureRingPacked,
		"SEQPACKET":       vu.FeatureVersion1 | 1<<1,
	} {
		t.Run(name, func(t *testing.T) {
			_, fc, errc := rawFront(t)
			fc.Write(vu.SetFeatures, vu.FlagVersion, binary.LittleEndian.AppendUint64(nil, feat))
			select {
			case err := <-errc:
				if err == nil {
					t.Fatal("Serve accepted the features")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Serve did not reject the features")
			}
		})
	}
	t.Run("CONFIG offered", func(t *testing.T) {
		_, fc, _ := rawFront(t)
		fc.Write(vu.GetProtocolFeatures, vu.FlagVersion, nil)
		m, err := fc.Read()
		if v, _ := vu.U64(m.Payload); err != nil || v&vu.ProtocolConfig == 0 || v&vu.ProtocolReplyAck == 0 {
			t.Fatalf("protocol features %#x %v", v, err)
		}
	})
}

func TestStopAndResumeRing(t *testing.T) {
	g := newFakeGuest(t, fakeOpts{base: 65534})
	l, _ := g.dev.Listen(5005)
	defer l.Close()
	c := connectGuest(t, g, l, 11, 5005)
	g.send(guestHdr(opRW, 11, 5005), []byte("one"))
	buf := make([]byte, 8)
	c.Read(buf)
	// Two tx packets so far (REQUEST, RW): last_avail = 65534+2 = 0 after wrap.
	st, _ := vu.ParseVringState(g.call2(vu.GetVringBase, vu.VringState{Index: txQ}.Marshal(nil)))
	if st.Index != txQ || st.Num != 0 {
		t.Fatalf("GET_VRING_BASE = %+v, want {1 0}", st)
	}
	// Stopped: a new packet is not processed.
	g.send(guestHdr(opRW, 11, 5005), []byte("two"))
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read on a stopped ring = %v", err)
	}
	// Resume as QEMU does: SET_VRING_BASE, then a kick fd.
	g.request(vu.SetVringBase, vu.VringState{Index: txQ, Num: st.Num}.Marshal(nil))
	fd := eventfd(t)
	g.request(vu.SetVringKick, binary.LittleEndian.AppendUint64(nil, txQ), fd)
	g.do(func() { g.kick[txQ] = fd })
	c.SetReadDeadline(time.Time{})
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "two" {
		t.Fatalf("after resume: %q %v", buf[:n], err)
	}
}

func TestHostileGuestStopsDevice(t *testing.T) {
	g := newFakeGuest(t, fakeOpts{})
	g.serveErrWant = func(err error) bool { return errors.Is(err, virtq.ErrBadRing) }
	l, _ := g.dev.Listen(5006)
	defer l.Close()
	c := connectGuest(t, g, l, 12, 5006)
	g.do(func() {
		// A descriptor loop on the tx queue.
		g.tx.SetDesc(0, g.tx.BufBase, 44, virtq.DescFNext, 1)
		g.tx.SetDesc(1, g.tx.BufBase, 44, virtq.DescFNext, 0)
		old := g.tx.AvailIdx()
		g.tx.PublishRaw(0)
		g.kickQ(txQ, g.tx, old)
	})
	select {
	case err := <-g.serveErr:
		if !errors.Is(err, virtq.ErrBadRing) {
			t.Fatalf("Serve = %v", err)
		}
		g.serveErr <- err
	case <-time.After(5 * time.Second):
		t.Fatal("device kept running on a looping chain")
	}
	// Connections were reset with an error naming the cause.
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("Read on a reset connection succeeded")
	}
}

func TestFrontendGoneResetsEverything(t *testing.T) {
	g := newFakeGuest(t, fakeOpts{})
	l, _ := g.dev.Listen(5007)
	defer l.Close()
	c := connectGuest(t, g, l, 13, 5007)
	dialErr := make(chan error, 1)
	go func() {
		_, err := g.dev.Dial(context.Background(), 99)
		dialErr <- err
	}()
	g.recv() // the REQUEST
	g.shutdown()
	if _, err := c.Write([]byte("x")); !errors.Is(err, errFrontendGone) {
		t.Fatalf("Write after QEMU left = %v", err)
	}
	if err := <-dialErr; !errors.Is(err, errFrontendGone) {
		t.Fatalf("pending Dial = %v", err)
	}
	g.dev.mu.Lock()
	n, f := len(g.dev.conns), g.dev.front
	g.dev.mu.Unlock()
	if n != 0 || f != nil {
		t.Fatalf("%d connections and front-end %v left", n, f)
	}
	// The listener survives; a new front-end could be served.
	if _, err := g.dev.Listen(5007); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("listener gone: %v", err)
	}
}
