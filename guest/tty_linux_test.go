package guest

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"lab/wire"
)

// ptyOutput collects what the child writes to the terminal.
type ptyOutput struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *ptyOutput) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		o.mu.Lock()
		ok := strings.Contains(o.buf.String(), s)
		o.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("terminal never showed %q; got %q", s, o.String())
}

func (o *ptyOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

func lflag(t *testing.T, f *os.File) uint32 {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return tio.Lflag
}

// The interpreter on a foreground terminal: it asks for a pty with the
// terminal's size, goes raw, sends SIGWINCH as Resize, and restores the
// terminal whether the program exits or the relay vanishes.
func TestInterpTerminal(t *testing.T) {
	for _, vanish := range []bool{false, true} {
		name := "exit"
		if vanish {
			name = "relay-vanishes"
		}
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, "")
			resized := make(chan *wire.Resize, 1)
			var launch *wire.Launch
			done := f.serve(t, func(t *testing.T, s *wire.Session, h *wire.Hello, l *wire.Launch) {
				launch = l
				accept(t, s)
				s.Writer(wire.Stdout).Write([]byte("ready\n"))
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				for {
					m, err := s.Recv(ctx)
					if err != nil {
						t.Errorf("relay: %v", err)
						return
					}
					if r, ok := m.(*wire.Resize); ok {
						resized <- r
						break
					}
				}
				if vanish {
					s.Conn().Close()
					return
				}
				s.Writer(wire.Stdout).Write([]byte("bye\n"))
				s.Writer(wire.Stdout).CloseWrite()
				s.Writer(wire.Stderr).CloseWrite()
				s.Send(&wire.Exit{Code: 7})
			})

			ptmx, tty, err := pty.Open()
			if err != nil {
				t.Skipf("no pty: %v", err)
			}
			defer ptmx.Close()
			defer tty.Close()
			if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 33, Cols: 101}); err != nil {
				t.Fatal(err)
			}
			before := lflag(t, tty)
			if before&unix.ICANON == 0 || before&unix.ECHO == 0 {
				t.Fatalf("new pty not canonical: lflag %#x", before)
			}
			out := &ptyOutput{}
			go func() {
				b := make([]byte, 4096)
				for {
					n, err := ptmx.Read(b)
					out.mu.Lock()
					out.buf.Write(b[:n])
					out.mu.Unlock()
					if err != nil {
						return
					}
				}
			}()

			cmd := f.interpCmd(t, f.exe, f.exe)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			out.waitFor(t, "ready")
			if lflag(t, tty)&(unix.ICANON|unix.ECHO) != 0 {
				t.Errorf("terminal not raw while the program runs: lflag %#x", lflag(t, tty))
			}
			if launch.Flags&wire.LaunchTTY == 0 || launch.Rows != 33 || launch.Cols != 101 {
				t.Errorf("launch tty flags %v size %dx%d, want tty 33x101", launch.Flags, launch.Rows, launch.Cols)
			}
			if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-resized:
				if r.Rows != 40 || r.Cols != 120 {
					t.Errorf("resize %dx%d, want 40x120", r.Rows, r.Cols)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("no resize reached the relay")
			}
			err = cmd.Wait()
			<-done
			code := cmd.ProcessState.ExitCode()
			if vanish {
				if code != 126 {
					t.Errorf("exit %d (%v), want 126", code, err)
				}
				out.waitFor(t, "closed the connection before the program exited")
			} else if code != 7 {
				t.Errorf("exit %d (%v), want 7", code, err)
			}
			if after := lflag(t, tty); after != before {
				t.Errorf("terminal not restored: lflag %#x, was %#x", after, before)
			}
		})
	}
}
