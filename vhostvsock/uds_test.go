package vhostvsock

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestUDSGuestToHost(t *testing.T) {
	uds := filepath.Join(t.TempDir(), "v.sock")
	g := newFakeGuest(t, fakeOpts{uds: uds})
	hl, err := net.Listen("unix", fmt.Sprintf("%s_%d", uds, 5000))
	if err != nil {
		t.Fatal(err)
	}
	defer hl.Close()
	got := make(chan string, 1)
	go func() {
		c, err := hl.Accept()
		if err != nil {
			return
		}
		b := make([]byte, 4)
		io.ReadFull(c, b)
		got <- string(b)
		c.Write([]byte("pong"))
		c.Close()
	}()
	g.send(guestHdr(opRequest, 21, 5000), nil)
	expectOp(t, g.recv(), opResponse, 21, 5000)
	g.send(guestHdr(opRW, 21, 5000), []byte("ping"))
	if s := <-got; s != "ping" {
		t.Fatalf("host program got %q", s)
	}
	p := g.recv()
	expectOp(t, p, opRW, 21, 5000)
	if string(p.payload) != "pong" {
		t.Fatalf("guest got %q", p.payload)
	}
	// The host program closed: the guest sees its SHUTDOWN (send side first, via the bridge).
	p = g.recv()
	expectOp(t, p, opShutdown, 21, 5000)

	// A port with no "<uds>_<port>" socket is refused.
	g.send(guestHdr(opRequest, 22, 5999), nil)
	expectOp(t, g.recv(), opRST, 22, 5999)
}

func TestUDSHostToGuest(t *testing.T) {
	uds := filepath.Join(t.TempDir(), "v.sock")
	g := newFakeGuest(t, fakeOpts{uds: uds})
	c, err := net.Dial("unix", uds)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT 1234\nhello")
	p := g.recv()
	if p.h.Op != opRequest || p.h.DstPort != 1234 {
		t.Fatalf("got %v", &p.h)
	}
	hp := p.h.SrcPort
	g.send(guestHdr(opResponse, 1234, hp), nil)
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || line != fmt.Sprintf("OK %d\n", hp) {
		t.Fatalf("handshake answer %q, %v", line, err)
	}
	// Bytes written right after the CONNECT line are not lost.
	p = g.recv()
	expectOp(t, p, opRW, 1234, hp)
	if string(p.payload) != "hello" {
		t.Fatalf("guest got %q", p.payload)
	}
	g.send(guestHdr(opRW, 1234, hp), []byte("world"))
	b := make([]byte, 5)
	if _, err := io.ReadFull(br, b); err != nil || string(b) != "world" {
		t.Fatalf("host got %q %v", b, err)
	}

	// Two connections to the same guest port get distinct host ports.
	c2, _ := net.Dial("unix", uds)
	defer c2.Close()
	fmt.Fprintf(c2, "CONNECT 1234\n")
	p = g.recv()
	if p.h.Op != opRequest || p.h.SrcPort == hp {
		t.Fatalf("second connection %v (first host port %d)", &p.h, hp)
	}
	// The guest refuses it: the host socket is closed without an OK.
	g.send(guestHdr(opRST, 1234, p.h.SrcPort), nil)
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if rest, err := io.ReadAll(c2); err != nil || len(rest) != 0 {
		t.Fatalf("refused connection: %q %v", rest, err)
	}
}

func TestUDSMalformed(t *testing.T) {
	uds := filepath.Join(t.TempDir(), "v.sock")
	g := newFakeGuest(t, fakeOpts{uds: uds})
	for _, line := range []string{"CONNECT\n", "CONNECT x\n", "HELLO 5\n", "CONNECT 99999999999\n", strings.Repeat("A", 100) + "\n"} {
		c, err := net.Dial("unix", uds)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(line))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		// Closed (EOF, or a reset when our unread bytes were still queued), never answered.
		if rest, err := io.ReadAll(c); (err != nil && !errors.Is(err, syscall.ECONNRESET)) || len(rest) != 0 {
			t.Errorf("%q: got %q, %v; want the socket closed", line, rest, err)
		}
		c.Close()
	}
	g.expectNone(50 * time.Millisecond)
}

// Whoever can connect to the vhost-user socket drives the device, and the UDS reaches
// every guest port: both are the owner's only, whatever the umask.
func TestSocketsOwnerOnly(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{SocketPath: filepath.Join(dir, "vhost.sock"), UDSPath: filepath.Join(dir, "v.sock"),
		GuestCID: fakeCID, Logger: slog.New(slog.DiscardHandler)}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, p := range []string{cfg.SocketPath, cfg.UDSPath} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v; want a socket with 0600", filepath.Base(p), fi.Mode())
		}
	}
}

// writeCounter counts Write calls.
type writeCounter struct{ n, calls int }

func (w *writeCounter) Write(p []byte) (int, error) { w.calls++; w.n += len(p); return len(p), nil }

// TestCopyInChunks: after a host program's "CONNECT <port>\n", its stream reaches the
// connection in large writes (each a device lock and a worker wake-up), the bytes the
// handshake's small reader had already buffered first. The bridge used to hand that
// 64-byte bufio.Reader to io.Copy, whose WriteTo refills it: 64 bytes per read and per
// Write, 16384 of each per MiB.
func TestCopyInChunks(t *testing.T) {
	const size = 1 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	// A plain Reader, as a *net.UnixConn is (no WriteTo).
	src := struct{ io.Reader }{io.MultiReader(strings.NewReader("CONNECT 1234\nab"), bytes.NewReader(data))}
	br := bufio.NewReaderSize(src, 64)
	if port, err := readConnect(br); err != nil || port != 1234 {
		t.Fatalf("readConnect: %d, %v", port, err)
	}
	var got bytes.Buffer
	w := &writeCounter{}
	n, err := copyIn(io.MultiWriter(&got, w), br)
	if err != nil || n != size+2 {
		t.Fatalf("copied %d bytes, %v; want %d", n, err, size+2)
	}
	if !bytes.Equal(got.Bytes(), append([]byte("ab"), data...)) {
		t.Fatal("copied bytes differ from the stream")
	}
	if max := size/(32<<10) + 2; w.calls > max {
		t.Errorf("%d bytes reached the connection in %d writes; want at most %d", n, w.calls, max)
	}
}
