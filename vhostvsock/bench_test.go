package vhostvsock

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"lab/vhostvsock/internal/virtq"
)

// BenchmarkPacketPath measures the device's own per-packet work with no rings or guest:
// a 4 KiB RW from the guest into a connection, the host reading it, the host writing 4 KiB
// and the device packing it into a receive buffer. It must not allocate.
func BenchmarkPacketPath(b *testing.B) {
	d, err := New(Config{SocketPath: filepath.Join(b.TempDir(), "s"), GuestCID: fakeCID, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	d.mu.Lock()
	c := d.newConnLocked(connKey{guest: 1, host: 5000}, stEstablished)
	c.peerBufAlloc = 1 << 30
	d.mu.Unlock()
	pkt := make([]byte, hdrSize+4096)
	h := guestHdr(opRW, 1, 5000)
	h.Len = 4096
	h.encode(pkt)
	tx := virtq.Chain{Readable: [][]byte{pkt[:hdrSize], pkt[hdrSize:]}, ReadLen: uint64(len(pkt))}
	rxBuf := make([]byte, hdrSize+4096)
	rx := virtq.Chain{Writable: [][]byte{rxBuf}, WriteLen: uint64(len(rxBuf))}
	buf := make([]byte, 4096)
	b.SetBytes(2 * 4096)
	b.ReportAllocs()
	for b.Loop() {
		d.mu.Lock()
		binary.LittleEndian.PutUint32(pkt[40:], c.txCnt) // the guest consumed everything
		d.handleTxLocked(&tx)
		d.mu.Unlock()
		c.Read(buf)
		c.Write(buf)
		d.mu.Lock()
		for d.hasRxWorkLocked() {
			d.fillRxLocked(&rx)
		}
		d.mu.Unlock()
	}
}

const benchChunk = 64 << 20

// The integration benchmarks need the QEMU guest; run them alone so the guest is booted once:
//
//	go test -run '^$' -bench Integration ./vhostvsock/
func BenchmarkIntegrationThroughput(b *testing.B) {
	if v := os.Getenv("VHOSTVSOCK_TXIRQ_BATCH"); v != "" {
		txIrqBatch, _ = strconv.Atoi(v)
	}
	e := sharedVM(b)
	d := e.dev
	b.Run("guest-to-host", func(b *testing.B) {
		l, err := d.Listen(5010)
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		b.SetBytes(benchChunk)
		buf := make([]byte, 256<<10)
		st := snap(e)
		defer func() { reportStats(b, e, st, benchChunk) }()
		for b.Loop() {
			cc := accept1(b, l)
			reply := e.cmd("sendz 5010 %d", benchChunk)
			c := <-cc
			n, err := io.CopyBuffer(io.Discard, c, buf)
			c.Close()
			if err != nil || n != benchChunk {
				b.Fatalf("read %d, %v", n, err)
			}
			e.reply(b, reply, time.Minute)
		}
	})
	b.Run("host-to-guest", func(b *testing.B) {
		buf := make([]byte, 256<<10)
		st := snap(e)
		defer func() { reportStats(b, e, st, benchChunk) }()
		for b.Loop() {
			b.StopTimer()
			ready := e.cmd("recvz 6010 1")
			e.reply(b, ready, time.Minute)
			b.StartTimer()
			sendChunk(b, d, 6010, buf)
			e.reply(b, ready, time.Minute)
		}
		b.SetBytes(benchChunk)
	})
	b.Run("unix-socket-baseline", func(b *testing.B) {
		b.SetBytes(benchChunk)
		buf := make([]byte, 256<<10)
		rbuf := make([]byte, 256<<10)
		for b.Loop() {
			a, z := unixPair(b)
			go func() {
				for n := 0; n < benchChunk; n += len(buf) {
					a.Write(buf)
				}
				a.Close()
			}()
			io.CopyBuffer(io.Discard, z, rbuf)
			z.Close()
		}
	})
}

// BenchmarkIntegrationHostToGuestRaw reads in the guest as lab bench's probe does (a
// blocking AF_VSOCK socket, no Go netpoller), in RBUF-byte reads with the socket's buffer
// (the host's credit) at SOCKBUF (0: the kernel's default, 256 KiB). VIA "dial": the host
// dials the guest and writes 256 KiB at a time; "uds": the guest dials the host's port,
// which the device bridges to a Unix socket the benchmark listens on and writes with
// io.Copy, as lab bench does. VHOSTVSOCK_H2G="RBUF:SOCKBUF:VIA,..." picks the variants.
func BenchmarkIntegrationHostToGuestRaw(b *testing.B) {
	variants := "8192:0:uds,262144:0:uds,262144:4194304:uds,262144:4194304:dial"
	if v := os.Getenv("VHOSTVSOCK_H2G"); v != "" {
		variants = v
	}
	e := sharedVM(b)
	for _, v := range strings.Split(variants, ",") {
		f := strings.Split(v, ":")
		if len(f) != 3 {
			b.Fatalf("variant %q: want RBUF:SOCKBUF:VIA", v)
		}
		rbuf, sockbuf, via := f[0], f[1], f[2]
		b.Run(fmt.Sprintf("rbuf=%s/sockbuf=%s/via=%s", rbuf, sockbuf, via), func(b *testing.B) {
			st := snap(e)
			defer func() { reportStats(b, e, st, benchChunk) }()
			for b.Loop() {
				if via == "uds" {
					h2gUDS(b, e, rbuf, sockbuf)
				} else {
					h2gDial(b, e, rbuf, sockbuf)
				}
			}
			b.SetBytes(benchChunk)
		})
	}
}

func h2gDial(b *testing.B, e *vmEnv, rbuf, sockbuf string) {
	b.StopTimer()
	ready := e.cmd("recvraw 6012 %s %s", rbuf, sockbuf)
	e.reply(b, ready, time.Minute)
	b.StartTimer()
	sendChunk(b, e.dev, 6012, make([]byte, 256<<10))
	if r := e.reply(b, ready, time.Minute); !strings.HasPrefix(r, fmt.Sprintf("OK %d ", benchChunk)) {
		b.Fatalf("guest: %s", r)
	}
}

func h2gUDS(b *testing.B, e *vmEnv, rbuf, sockbuf string) {
	b.StopTimer()
	p := e.uds + "_6013"
	os.Remove(p)
	l, err := net.Listen("unix", p)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		io.Copy(c, io.LimitReader(zeroReader{}, benchChunk))
		c.Close()
	}()
	b.StartTimer()
	if r := e.reply(b, e.cmd("readraw 6013 %s %s", rbuf, sockbuf), time.Minute); !strings.HasPrefix(r, fmt.Sprintf("OK %d ", benchChunk)) {
		b.Fatalf("guest: %s", r)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func BenchmarkIntegrationConnect(b *testing.B) {
	e := sharedVM(b)
	d := e.dev
	b.Run("guest-to-host", func(b *testing.B) {
		l, err := d.Listen(5011)
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		e.reply(b, e.cmd("connect 5011 %d", b.N), 10*time.Minute)
	})
	b.Run("host-to-guest", func(b *testing.B) {
		b.StopTimer()
		ready := e.cmd("recvz 6011 %d", b.N)
		e.reply(b, ready, time.Minute)
		b.StartTimer()
		for range b.N {
			c, err := d.Dial(context.Background(), 6011)
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
		b.StopTimer()
		e.reply(b, ready, time.Minute)
	})
	b.Run("unix-socket-baseline", func(b *testing.B) {
		l, err := net.Listen("unix", filepath.Join(b.TempDir(), "l"))
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		for range b.N {
			c, err := net.Dial("unix", l.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
}

// cpuSeconds returns the user+system CPU time of a process (pid 0: this one).
func cpuSeconds(pid int) float64 {
	if pid == 0 {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

type benchSnap struct {
	st          Stats
	creditWaits uint64
	qemu, self  float64
}

func snap(e *vmEnv) benchSnap {
	return benchSnap{e.dev.Stats(), e.dev.stats.creditWaits.Load(), cpuSeconds(e.qemu.Process.Pid), cpuSeconds(0)}
}

// reportStats adds per-op counters to a benchmark: notifications, packets, and the CPU
// seconds QEMU (guest vCPUs and device emulation) and this process (the back-end) used. On a
// loaded machine MB per QEMU CPU-second says more than MB per wall second.
func reportStats(b *testing.B, e *vmEnv, before benchSnap, bytesPerOp float64) {
	after := snap(e)
	n := float64(b.N)
	if q := after.qemu - before.qemu; q > 0 && bytesPerOp > 0 {
		b.ReportMetric(bytesPerOp*n/q/1e6, "MB/qemu-cpu-s")
	}
	if s := after.self - before.self; s > 0 && bytesPerOp > 0 {
		b.ReportMetric(bytesPerOp*n/s/1e6, "MB/backend-cpu-s")
	}
	s, s0 := after.st, before.st
	b.ReportMetric(float64(s.Kicks-s0.Kicks)/n, "kicks/op")
	b.ReportMetric(float64(s.Interrupts-s0.Interrupts)/n, "irqs/op")
	b.ReportMetric(float64(s.TxPackets-s0.TxPackets)/n, "txpkts/op")
	b.ReportMetric(float64(s.RxPackets-s0.RxPackets)/n, "rxpkts/op")
	b.ReportMetric(float64(after.creditWaits-before.creditWaits)/n, "creditwaits/op")
}

func unixPair(b *testing.B) (net.Conn, net.Conn) {
	l, err := net.Listen("unix", filepath.Join(b.TempDir(), fmt.Sprint("p", time.Now().UnixNano())))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ch := make(chan net.Conn, 1)
	go func() { c, _ := l.Accept(); ch <- c }()
	a, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	return a, <-ch
}

// sendChunk dials the guest's port on d and writes benchChunk bytes in writes of
// len(buf), then half-closes and waits for the guest to close after reading everything.
func sendChunk(b *testing.B, d *Device, port uint32, buf []byte) {
	c, err := d.Dial(context.Background(), port)
	if err != nil {
		b.Fatal(err)
	}
	for n := 0; n < benchChunk; n += len(buf) {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.(*Conn).CloseWrite()
	io.Copy(io.Discard, c) // the guest closes after reading everything
	c.Close()
}
