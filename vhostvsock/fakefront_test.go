package vhostvsock

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	vu "lab/vhostvsock/internal/vhostuser"
	"lab/vhostvsock/internal/virtq"
)

// A fake vhost-user front-end plus a fake guest driver: guest memory is a memfd shared with
// the device (two regions on one fd, with an mmap offset, as QEMU does), the rings are filled
// by virtq.Driver, notifications are eventfds.

const (
	fakeMemSize = 32 << 20
	fakeVABase  = 0x7f0000000000 // "QEMU virtual address" of guest physical 0
	gapStart    = 0xa0000        // guest physical hole between the two regions
	gapEnd      = 0xc0000
	fakeCID     = 3
	rxBufSize   = 3776 // what Linux 6.1 posts
)

type fakeOpts struct {
	noIndirect bool
	noEventIdx bool
	base       uint16 // initial vring base (u16 wrap tests)
	qsize      uint16
	uds        string
	bufSize    int
	maxConns   int
}

type rxPkt struct {
	h       header
	payload []byte
}

type fakeGuest struct {
	t        testing.TB
	dev      *Device
	mem      []byte
	memfd    int
	fc       *vu.Conn
	rx, tx   *virtq.Driver
	kick     [2]int
	call     [2]int
	cmdfd    int
	indirect bool

	mu       sync.Mutex
	cmds     []func()
	stopping bool

	pendingTx    [][]byte
	pkts         chan rxPkt
	handler      func(g *fakeGuest, p rxPkt) // optional; runs in the loop goroutine
	loopDone     chan struct{}
	serveErr     chan error
	rxCount      int
	rxHold       bool             // post no more receive buffers (a guest too busy to refill them)
	serveErrWant func(error) bool // nil: Serve must return nil
}

func newFakeGuest(t testing.TB, o fakeOpts) *fakeGuest {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "vhost.sock")
	dev, err := New(Config{SocketPath: sock, GuestCID: fakeCID, UDSPath: o.uds, BufferSize: o.bufSize, MaxConns: o.maxConns, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeGuest{t: t, dev: dev, pkts: make(chan rxPkt, 1<<16), loopDone: make(chan struct{}), serveErr: make(chan error, 1)}
	go func() { g.serveErr <- dev.Serve(context.Background()) }()
	g.setup(sock, o)
	go g.loop()
	t.Cleanup(func() { g.shutdown(); dev.Close() })
	return g
}

func (g *fakeGuest) must(err error) {
	g.t.Helper()
	if err != nil {
		g.t.Fatal(err)
	}
}

func (g *fakeGuest) request(req vu.Request, payload []byte, fds ...int) {
	g.t.Helper()
	g.must(g.fc.Write(req, vu.FlagVersion, payload, fds...))
}

func (g *fakeGuest) call2(req vu.Request, payload []byte) []byte {
	g.t.Helper()
	g.request(req, payload)
	m, err := g.fc.Read()
	g.must(err)
	if m.Request != req || m.Flags&vu.FlagReply == 0 {
		g.t.Fatalf("reply to %v: got %v flags %#x", req, m.Request, m.Flags)
	}
	return append([]byte(nil), m.Payload...)
}

func eventfd(t testing.TB) int {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func (g *fakeGuest) setup(sock string, o fakeOpts) {
	t := g.t
	var err error
	g.memfd, err = unix.MemfdCreate("guest", unix.MFD_CLOEXEC)
	g.must(err)
	g.must(unix.Ftruncate(g.memfd, fakeMemSize))
	g.mem, err = unix.Mmap(g.memfd, 0, fakeMemSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	g.must(err)
	t.Cleanup(func() { unix.Munmap(g.mem); unix.Close(g.memfd) })

	var uc *net.UnixConn
	for i := 0; ; i++ {
		uc, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
		if err == nil || i > 100 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	g.must(err)
	g.fc = vu.NewConn(uc)

	feat, _ := vu.U64(g.call2(vu.GetFeatures, nil))
	if feat&vu.FeatureAccessPlatform != 0 || feat&vu.FeatureRingPacked != 0 || feat&(1<<1) != 0 {
		t.Fatalf("offered features %#x include ACCESS_PLATFORM, RING_PACKED or SEQPACKET", feat)
	}
	pf, _ := vu.U64(g.call2(vu.GetProtocolFeatures, nil))
	g.request(vu.SetProtocolFeatures, binary.LittleEndian.AppendUint64(nil, pf&(vu.ProtocolConfig|vu.ProtocolReplyAck)))
	g.request(vu.SetOwner, nil)
	for i := range 2 {
		g.kick[i], g.call[i] = eventfd(t), eventfd(t)
		g.request(vu.SetVringCall, binary.LittleEndian.AppendUint64(nil, uint64(i)), g.call[i])
	}
	g.cmdfd = eventfd(t)
	cfg := g.call2(vu.GetConfig, vu.ConfigReq{Size: 8, Data: make([]byte, 8)}.Marshal(nil))
	if c, err := vu.ParseConfig(cfg); err != nil || binary.LittleEndian.Uint64(c.Data) != fakeCID {
		t.Fatalf("GET_CONFIG = %x (%v)", cfg, err)
	}
	want := uint64(vu.FeatureVersion1 | vu.FeatureProtocolFeatures)
	if !o.noIndirect {
		want |= vu.FeatureIndirectDesc
		g.indirect = true
	}
	if !o.noEventIdx {
		want |= vu.FeatureEventIdx
	}
	g.request(vu.SetFeatures, binary.LittleEndian.AppendUint64(nil, want))

	// Two regions from the same memfd, the second at an mmap offset, with a hole between.
	regs := []vu.Region{
		{GuestPhys: 0, Size: gapStart, UserAddr: fakeVABase, MmapOffset: 0},
		{GuestPhys: gapEnd, Size: fakeMemSize - gapEnd, UserAddr: fakeVABase + gapEnd, MmapOffset: gapEnd},
	}
	fd1, _ := unix.Dup(g.memfd)
	fd2, _ := unix.Dup(g.memfd)
	g.must(g.fc.Write(vu.SetMemTable, vu.FlagVersion|vu.FlagNeedReply, vu.MarshalMemTable(nil, regs), fd1, fd2))
	unix.Close(fd1)
	unix.Close(fd2)
	m, err := g.fc.Read()
	g.must(err)
	if v, _ := vu.U64(m.Payload); m.Request != vu.SetMemTable || v != 0 {
		t.Fatalf("SET_MEM_TABLE ack: %v %d", m.Request, v)
	}

	qsize := o.qsize
	if qsize == 0 {
		qsize = 128
	}
	g.rx = virtq.Layout(g.mem, 0x100000, qsize, rxBufSize)
	g.tx = virtq.Layout(g.mem, 0x100000+((g.rx.Footprint()+4095)&^4095), qsize, maxPayload+hdrSize+64)
	g.rx.EventIdx, g.tx.EventIdx = !o.noEventIdx, !o.noEventIdx
	for i, d := range []*virtq.Driver{g.rx, g.tx} {
		d.SetBase(o.base)
		g.request(vu.SetVringNum, vu.VringState{Index: uint32(i), Num: uint32(qsize)}.Marshal(nil))
		g.request(vu.SetVringBase, vu.VringState{Index: uint32(i), Num: uint32(o.base)}.Marshal(nil))
		g.request(vu.SetVringAddr, vu.VringAddr{Index: uint32(i), Desc: fakeVABase + d.Desc, Used: fakeVABase + d.Used, Avail: fakeVABase + d.Avail}.Marshal(nil))
		g.request(vu.SetVringKick, binary.LittleEndian.AppendUint64(nil, uint64(i)), g.kick[i])
		g.request(vu.SetVringEnable, vu.VringState{Index: uint32(i), Num: 1}.Marshal(nil))
	}
	g.postRx()
}

// do runs fn in the loop goroutine.
func (g *fakeGuest) do(fn func()) {
	g.mu.Lock()
	g.cmds = append(g.cmds, fn)
	g.mu.Unlock()
	var one = [8]byte{1}
	unix.Write(g.cmdfd, one[:])
}

// send queues a packet from the guest.
func (g *fakeGuest) send(h header, payload []byte) {
	b := make([]byte, hdrSize+len(payload))
	h.Len = uint32(len(payload))
	if h.SrcCID == 0 {
		h.SrcCID = fakeCID
	}
	if h.DstCID == 0 {
		h.DstCID = cidHost
	}
	if h.Type == 0 {
		h.Type = typeStream
	}
	h.encode(b)
	copy(b[hdrSize:], payload)
	g.do(func() { g.pendingTx = append(g.pendingTx, b) })
}

// recv waits for the next packet the device sent.
func (g *fakeGuest) recv() rxPkt {
	g.t.Helper()
	select {
	case p := <-g.pkts:
		return p
	case <-time.After(10 * time.Second):
		g.t.Fatal("no packet from the device within 10s")
		return rxPkt{}
	}
}

// expectNone checks that no packet arrives for a short while.
func (g *fakeGuest) expectNone(d time.Duration) {
	g.t.Helper()
	select {
	case p := <-g.pkts:
		g.t.Fatalf("unexpected packet %v", &p.h)
	case <-time.After(d):
	}
}

func (g *fakeGuest) kickQ(i int, d *virtq.Driver, old uint16) {
	if d.NeedKick(old) {
		var one = [8]byte{1}
		unix.Write(g.kick[i], one[:])
	}
}

func (g *fakeGuest) postRx() {
	if g.rxHold {
		return
	}
	old := g.rx.AvailIdx()
	for g.rx.Free() > 0 {
		if _, err := g.rx.Add([]virtq.Seg{{WriteLen: rxBufSize}}, false); err != nil {
			break
		}
	}
	if g.rx.AvailIdx() != old {
		g.kickQ(rxQ, g.rx, old)
	}
}

func (g *fakeGuest) flushTx() {
	old := g.tx.AvailIdx()
	for len(g.pendingTx) > 0 {
		b := g.pendingTx[0]
		segs := []virtq.Seg{{Data: b[:hdrSize]}}
		if len(b) > hdrSize {
			segs = append(segs, virtq.Seg{Data: b[hdrSize:]})
		}
		if _, err := g.tx.Add(segs, g.indirect); err != nil {
			break
		}
		g.pendingTx = g.pendingTx[1:]
	}
	if g.tx.AvailIdx() != old {
		g.kickQ(txQ, g.tx, old)
	}
}

func (g *fakeGuest) loop() {
	defer close(g.loopDone)
	var buf [8]byte
	pfd := []unix.PollFd{{Fd: int32(g.call[0]), Events: unix.POLLIN}, {Fd: int32(g.call[1]), Events: unix.POLLIN}, {Fd: int32(g.cmdfd), Events: unix.POLLIN}}
	for {
		for i := range pfd {
			unix.Read(int(pfd[i].Fd), buf[:])
		}
		g.mu.Lock()
		cmds := g.cmds
		g.cmds = nil
		stop := g.stopping
		g.mu.Unlock()
		if stop {
			return
		}
		for _, fn := range cmds {
			fn()
		}
		for progress := true; progress; {
			progress = false
			if len(g.tx.Collect()) > 0 {
				progress = true
			}
			for _, u := range g.rx.Collect() {
				progress = true
				g.rxCount++
				var p rxPkt
				if len(u.Data) < hdrSize {
					g.t.Errorf("rx packet of %d bytes", len(u.Data))
					continue
				}
				p.h.decode(u.Data)
				if int(p.h.Len) != len(u.Data)-hdrSize {
					g.t.Errorf("rx packet %v in %d bytes", &p.h, len(u.Data))
				}
				p.payload = u.Data[hdrSize:]
				if g.handler != nil {
					g.handler(g, p)
				} else {
					g.pkts <- p
				}
			}
			g.postRx()
			before := len(g.pendingTx)
			g.flushTx()
			if len(g.pendingTx) != before {
				progress = true
			}
			// Ask for an interrupt on the next used entry, then look again (no lost wakeups).
			g.rx.UsedEvent(g.rx.LastUsed())
			g.tx.UsedEvent(g.tx.LastUsed())
		}
		if _, err := unix.Poll(pfd, -1); err != nil && !errors.Is(err, unix.EINTR) {
			g.t.Errorf("poll: %v", err)
			return
		}
	}
}

// shutdown stops the guest loop and disconnects the front-end; Serve must return nil.
func (g *fakeGuest) shutdown() {
	g.mu.Lock()
	already := g.stopping
	g.stopping = true
	g.mu.Unlock()
	if already {
		return
	}
	g.do(func() {})
	<-g.loopDone
	g.fc.Close()
	select {
	case err := <-g.serveErr:
		if g.serveErrWant != nil {
			if !g.serveErrWant(err) {
				g.t.Errorf("Serve returned %v", err)
			}
		} else if err != nil {
			g.t.Errorf("Serve after the front-end closed: %v", err)
		}
	case <-time.After(10 * time.Second):
		g.t.Error("Serve did not return after the front-end closed")
	}
	for i := range 2 {
		unix.Close(g.kick[i])
		unix.Close(g.call[i])
	}
	unix.Close(g.cmdfd)
}

type tWriter struct {
	t    testing.TB
	done *atomic.Bool
}

func (w tWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// testLogger sends the device's log to the test's log (shown with -v or on failure) until
// the test ends. Call it before creating what logs, so its cleanup runs last.
func testLogger(t testing.TB) *slog.Logger {
	done := new(atomic.Bool)
	t.Cleanup(func() { done.Store(true) })
	return slog.New(slog.NewTextHandler(tWriter{t, done}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestMain(m *testing.M) {
	code := m.Run()
	stopVM() // the integration guest, if one was booted
	os.Exit(code)
}
