package wire

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// unixPair returns both ends of a real Unix stream connection.
func unixPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			ch <- nil
			return
		}
		ch <- c
	}()
	a, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	if b == nil {
		t.Fatal("accept failed")
	}
	return a, b
}

func sessionPair(t testing.TB) (guest, host *Session) {
	a, b := unixPair(t)
	guest, host = NewSession(a, RoleGuest), NewSession(b, RoleHost)
	t.Cleanup(func() { guest.Close(); host.Close() })
	return guest, host
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestSessionLaunch(t *testing.T) {
	g, h := sessionPair(t)
	launch := &Launch{Format: FormatPE, Path: "/mnt/c/x.exe", Argv: []string{"x.exe"}, Cwd: "/"}
	if err := g.Send(NewHello([]byte("secret")), launch); err != nil {
		t.Fatal(err)
	}
	m, err := h.Recv(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if hello, ok := m.(*Hello); !ok || string(hello.Token) != "secret" {
		t.Fatalf("got %#v", m)
	}
	m, err = h.Recv(ctx(t))
	if err != nil || m.(*Launch).Path != "/mnt/c/x.exe" {
		t.Fatalf("got %#v, %v", m, err)
	}
	if err := h.Send(NewHello(nil), &LaunchResult{}); err != nil {
		t.Fatal(err)
	}

	// Streams: guest stdin -> host; host stdout, stderr -> guest; then exit.
	want := make([]byte, 3<<20) // several windows' worth
	rand.Read(want)
	var wg sync.WaitGroup
	var gotIn, gotOut, gotErr bytes.Buffer
	wg.Add(4)
	go func() {
		defer wg.Done()
		if _, err := g.Writer(Stdin).ReadFrom(bytes.NewReader(want)); err != nil {
			t.Error(err)
		}
		g.Writer(Stdin).CloseWrite()
	}()
	go func() {
		defer wg.Done()
		if _, err := io.Copy(&gotIn, h.Reader(Stdin)); err != nil {
			t.Error(err)
		}
		// Echo it back on stdout, a short message on stderr, then Exit.
		var w2 sync.WaitGroup
		w2.Add(2)
		go func() {
			defer w2.Done()
			h.Writer(Stdout).Write(gotIn.Bytes())
			h.Writer(Stdout).CloseWrite()
		}()
		go func() {
			defer w2.Done()
			io.WriteString(h.Writer(Stderr), "warning\n")
			h.Writer(Stderr).CloseWrite()
		}()
		w2.Wait()
		h.Send(&Exit{Code: 0x101})
	}()
	go func() {
		defer wg.Done()
		if _, err := g.Reader(Stdout).WriteTo(&gotOut); err != nil {
			t.Error(err)
		}
	}()
	go func() {
		defer wg.Done()
		if _, err := io.Copy(&gotErr, g.Reader(Stderr)); err != nil {
			t.Error(err)
		}
	}()
	for _, want := range []Type{TypeHello, TypeLaunchResult, TypeExit} {
		m, err := g.Recv(ctx(t))
		if err != nil || m.Type() != want {
			t.Fatalf("got %v, %v; want %v", m, err, want)
		}
		if e, ok := m.(*Exit); ok && e.Status() != 1 {
			t.Fatalf("status %d", e.Status())
		}
	}
	wg.Wait()
	if !bytes.Equal(gotIn.Bytes(), want) || !bytes.Equal(gotOut.Bytes(), want) {
		t.Fatalf("stream corrupted: in %d out %d bytes of %d", gotIn.Len(), gotOut.Len(), len(want))
	}
	if gotErr.String() != "warning\n" {
		t.Fatalf("stderr %q", gotErr.String())
	}
	h.Close()
	if _, err := g.Recv(ctx(t)); err != io.EOF {
		t.Fatalf("after host close: %v, want io.EOF", err)
	}
}

// A stream nobody reads must not stall the others: fill stdout's window
// completely, then stderr still flows.
func TestSessionStreamsIndependent(t *testing.T) {
	g, h := sessionPair(t)
	done := make(chan error, 1)
	go func() {
		_, err := h.Writer(Stdout).Write(make([]byte, InitialWindow+1))
		done <- err
	}()
	go func() {
		io.WriteString(h.Writer(Stderr), "still here")
		h.Writer(Stderr).CloseWrite()
	}()
	b, err := io.ReadAll(g.Reader(Stderr))
	if err != nil || string(b) != "still here" {
		t.Fatalf("stderr %q, %v", b, err)
	}
	select {
	case err := <-done:
		t.Fatalf("writer past the window returned early: %v", err)
	default:
	}
	// Reading stdout releases it.
	buf := make([]byte, InitialWindow+1)
	if _, err := io.ReadFull(g.Reader(Stdout), buf); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestSessionCloseRead(t *testing.T) {
	g, h := sessionPair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(h.Writer(Stdout), infiniteReader{})
		errc <- err
	}()
	buf := make([]byte, 10)
	if _, err := io.ReadFull(g.Reader(Stdout), buf); err != nil {
		t.Fatal(err)
	}
	if err := g.Reader(Stdout).CloseRead(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("writer err = %v, want ErrStreamClosed", err)
	}
	if _, err := g.Reader(Stdout).Read(buf); err != ErrReadClosed {
		t.Fatalf("read after CloseRead: %v", err)
	}
	// The session itself is fine.
	if err := h.Send(&Exit{}); err != nil {
		t.Fatal(err)
	}
	if m, err := g.Recv(ctx(t)); err != nil || m.Type() != TypeExit {
		t.Fatalf("%v %v", m, err)
	}
}

type infiniteReader struct{}

func (infiniteReader) Read(p []byte) (int, error) { return len(p), nil }

func TestSessionConnLost(t *testing.T) {
	g, h := sessionPair(t)
	io.WriteString(h.Writer(Stdout), "partial")
	h.Conn().Close()
	b, err := io.ReadAll(g.Reader(Stdout))
	if string(b) != "partial" || !errors.Is(err, ErrConnLost) {
		t.Fatalf("got %q, %v; want the data then ErrConnLost", b, err)
	}
	if _, err := g.Recv(ctx(t)); err != io.EOF {
		t.Fatalf("Recv: %v", err)
	}
	if _, err := g.Writer(Stdin).Write([]byte("x")); err == nil {
		// The first write may land in the socket buffer; the writer
		// sees the session's end at the latest on the next acquire.
		if _, err := g.Writer(Stdin).Write([]byte("x")); err == nil {
			t.Fatal("write after peer close succeeded twice")
		}
	}
}

func TestSessionLocalClose(t *testing.T) {
	g, _ := sessionPair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := g.Reader(Stdout).Read(make([]byte, 1))
		errc <- err
	}()
	g.Close()
	if err := <-errc; !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("blocked Read after Close: %v", err)
	}
	if _, err := g.Recv(ctx(t)); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("Recv after Close: %v", err)
	}
}

func TestSessionRecvContext(t *testing.T) {
	g, _ := sessionPair(t)
	c, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := g.Recv(c); err != context.Canceled {
		t.Fatalf("Recv: %v", err)
	}
}

func TestSessionDeadline(t *testing.T) {
	g, _ := sessionPair(t)
	g.SetDeadline(time.Now().Add(10 * time.Millisecond))
	_, err := g.Recv(ctx(t))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Recv after deadline: %v, want a timeout", err)
	}
}

// Protocol violations end the session with a clear error.
func TestSessionProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		role  Role
		frame string
		want  string
	}{
		{"overrun", RoleGuest, "", "overran"},
		{"data after eof", RoleGuest, "00000002 11 01 00000003 10 01 61", "after its eof"},
		{"wrong direction data", RoleGuest, "00000003 10 00 61", "which this side sends"},
		{"wrong direction window", RoleHost, "00000006 12 00 00000001", "which this side receives"},
		{"unknown stream", RoleHost, "00000003 10 07 61", "unknown stream"},
		{"launch to guest", RoleGuest, "00000002 05 02", "unexpected signal"},
		{"exit to host", RoleHost, "00000007 06 00000000 00 00", "unexpected exit"},
		{"zero window", RoleHost, "00000006 12 01 00000000", "zero window"},
		{"huge", RoleHost, "7fffffff 10", "frame too large"},
		{"cut", RoleHost, "00000010 10 00", "middle of a frame"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := unixPair(t)
			s := NewSession(a, tc.role)
			defer s.Close()
			go io.Copy(io.Discard, b)
			in := unhex(t, tc.frame)
			if tc.name == "overrun" {
				chunk, _ := AppendFrame(nil, TypeData, append([]byte{byte(Stdout)}, make([]byte, MaxData)...))
				for range InitialWindow/MaxData + 1 {
					in = append(in, chunk...)
				}
			}
			b.Write(in)
			b.(*net.UnixConn).CloseWrite()
			_, err := s.Recv(ctx(t))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestStreamWrongRolePanics(t *testing.T) {
	g, _ := sessionPair(t)
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	g.Reader(Stdin)
}

// The data path allocates nothing per frame.
func TestDataPathAllocs(t *testing.T) {
	g, h := sessionPair(t)
	buf := make([]byte, MaxData)
	w, r := h.Writer(Stdout), g.Reader(Stdout)
	w.Write(buf)
	io.ReadFull(r, buf) // first use allocates the ring and frame buffers
	allocs := testing.AllocsPerRun(100, func() {
		w.Write(buf)
		io.ReadFull(r, buf)
	})
	if allocs > 0 {
		t.Fatalf("%v allocations per frame", allocs)
	}
}

// BenchmarkStream compares one stream through a Session with a plain copy
// over the same kind of Unix socket (io.Copy on both ends in both cases).
func BenchmarkStream(b *testing.B) {
	const chunk = 32 << 10
	b.Run("plain-unix", func(b *testing.B) {
		a, c := unixPair(b)
		defer c.Close()
		b.SetBytes(chunk)
		done := make(chan struct{})
		go func() {
			io.Copy(io.Discard, c)
			close(done)
		}()
		io.Copy(a, &budgetReader{n: int64(b.N) * chunk})
		a.Close()
		<-done
	})
	b.Run("session", func(b *testing.B) {
		g, h := sessionPair(b)
		b.SetBytes(chunk)
		done := make(chan struct{})
		go func() {
			io.Copy(io.Discard, g.Reader(Stdout))
			close(done)
		}()
		w := h.Writer(Stdout)
		io.Copy(w, &budgetReader{n: int64(b.N) * chunk})
		w.CloseWrite()
		<-done
	})
}

// budgetReader yields n bytes (whatever is in p) in reads of any size.
type budgetReader struct{ n int64 }

func (r *budgetReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), r.n))
	r.n -= int64(n)
	return n, nil
}

// Control messages keep their order and arrive while both output streams
// are saturated and stdin flows the other way.
func TestSessionControlDuringStreams(t *testing.T) {
	g, h := sessionPair(t)
	const n = 500
	var wg sync.WaitGroup
	for _, id := range []StreamID{Stdout, Stderr} {
		wg.Add(2)
		go func() {
			defer wg.Done()
			io.Copy(h.Writer(id), io.LimitReader(infiniteReader{}, 4<<20))
			h.Writer(id).CloseWrite()
		}()
		go func() {
			defer wg.Done()
			if n, err := io.Copy(io.Discard, g.Reader(id)); n != 4<<20 || err != nil {
				t.Errorf("%v: %d bytes, %v", id, n, err)
			}
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		io.Copy(g.Writer(Stdin), io.LimitReader(infiniteReader{}, 4<<20))
		g.Writer(Stdin).CloseWrite()
	}()
	go func() {
		defer wg.Done()
		io.Copy(io.Discard, h.Reader(Stdin))
	}()
	go func() {
		for i := range n {
			// Signals, not resizes: those coalesce (TestSessionResizeBurst).
			if err := g.Send(&Signal{Signo: uint8(i%MaxSignal + 1)}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := range n {
		m, err := h.Recv(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if s := m.(*Signal); s.Signo != uint8(i%MaxSignal+1) {
			t.Fatalf("signal %d arrived as #%d", s.Signo, i)
		}
	}
	wg.Wait()
}

// TestSessionResizeBurst: a burst of resizes far beyond the control queue (a window being
// dragged while nobody calls Recv) coalesces into the latest size instead of ending the
// session.
func TestSessionResizeBurst(t *testing.T) {
	g, h := sessionPair(t)
	var burst []byte
	for i := range 5000 {
		burst, _ = AppendMessage(burst, &Resize{Rows: uint16(i), Cols: 80})
	}
	burst, _ = AppendMessage(burst, &Signal{Signo: 2})
	burst, _ = AppendMessage(burst, &Resize{Rows: 24, Cols: 132})
	if _, err := g.Conn().Write(burst); err != nil {
		t.Fatal(err)
	}
	// Nobody calls Recv until the host has read the whole burst (or ended).
	for {
		h.cmu.Lock()
		var last Message
		if len(h.cq) > 0 {
			last = h.cq[len(h.cq)-1]
		}
		h.cmu.Unlock()
		if r, ok := last.(*Resize); ok && r.Cols == 132 || isDone(h.Done()) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	var got []Message
	for len(got) < 3 {
		m, err := h.Recv(ctx(t))
		if err != nil {
			t.Fatalf("after %d messages %v: %v", len(got), got, err)
		}
		got = append(got, m)
		if r, ok := m.(*Resize); ok && r.Cols == 132 {
			break
		}
	}
	// The resizes before the signal coalesced into one, which then gave way to the latest.
	want := []Message{&Signal{Signo: 2}, &Resize{Rows: 24, Cols: 132}}
	if !reflect.DeepEqual(got, want) {
		var desc []string
		for _, m := range got {
			desc = append(desc, fmt.Sprintf("%T%+v", m, m))
		}
		t.Errorf("received %v, want a signal then the latest size", desc)
	}
	if err := h.Err(); err != nil {
		t.Errorf("session ended: %v", err)
	}
}

// TestSessionProtocolErrorText: a malformed control frame ends the session with one
// "wire:" prefix, and the peer is told why before the connection closes.
func TestSessionProtocolErrorText(t *testing.T) {
	for _, tc := range []struct {
		name, frame, want string
	}{
		{"truncated resize", "00000002 04 00", "wire: protocol error: resize message truncated"},
		{"bad signal", "00000002 05 00", "wire: protocol error: signal 0 out of range"},
		{"empty frame", "00000000 05", "wire: protocol error: empty frame"},
		{"huge", "7fffffff 10", "wire: frame too large: 2147483651 bytes (limit 131077); is the peer a lab relay?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, h := sessionPair(t)
			g.Conn().Write(unhex(t, tc.frame))
			_, err := h.Recv(ctx(t))
			if err == nil || err.Error() != tc.want {
				t.Fatalf("host: %v, want %q", err, tc.want)
			}
			_, err = g.Recv(ctx(t))
			var pe *PeerError
			want := "wire: the peer ended the session: " + strings.TrimPrefix(tc.want, "wire: ")
			if !errors.As(err, &pe) || err.Error() != want {
				t.Fatalf("guest: %v, want %q", err, want)
			}
		})
	}
}
