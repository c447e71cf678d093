package guest

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"lab/wire"
)

// buildInterp builds the real static lab-interop for benchmarks.
func buildInterp(b *testing.B) string {
	b.Helper()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out := filepath.Join(b.TempDir(), "lab-interop")
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, "lab/cmd/lab-interop")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Skipf("cannot build lab-interop: %v\n%s", err, msg)
	}
	return out
}

// quickRelay serves launches that exit 0 at once, until l is closed.
func quickRelay(l net.Listener) {
	serveEach(l, func(s *wire.Session) {
		s.Send(wire.NewHello(nil), &wire.LaunchResult{})
		finish(s, wire.Exit{})
		for {
			if _, err := s.Recv(context.Background()); err != nil {
				return
			}
		}
	})
}

// BenchmarkLaunch: the interpreter's own cost per launch (config, token,
// connect, handshake, streams, exit) over a Unix socket, side by side
// with starting the same binary that exits at once.
func BenchmarkLaunch(b *testing.B) {
	bin := buildInterp(b)
	f := newFixture(b, "")
	b.Run("exec-only", func(b *testing.B) {
		for b.Loop() {
			cmd := exec.Command(bin) // no arguments: prints one line, exits 126
			cmd.Run()
		}
	})
	b.Run("interp-launch", func(b *testing.B) {
		l, err := net.Listen("unix", f.sock)
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		go quickRelay(l)
		for b.Loop() {
			cmd := exec.Command(bin, f.exe, f.exe)
			cmd.Env = append(os.Environ(), ConfigEnv+"="+f.config)
			cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
			if err := cmd.Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkStdout: bytes per second from a host-side writer to the
// guest process's stdout pipe, through the interpreter (relay session ->
// lab-interop -> pipe) side by side with a plain Unix socket copied to
// stdout by a process of the same binary, with a 32 KiB read/write loop
// and with io.Copy (which splices socket to pipe without a user-space
// copy).
func BenchmarkStdout(b *testing.B) {
	const size = 64 << 20
	chunk := make([]byte, 32<<10)
	f := newFixture(b, "")
	consume := func(b *testing.B, cmd *exec.Cmd) {
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, out)
		if err := cmd.Wait(); err != nil || n != size {
			b.Fatalf("got %d bytes, %v", n, err)
		}
	}
	sock := filepath.Join(f.dir, "plain.sock")
	l, err := net.Listen("unix", sock)
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
			for n := 0; n < size; n += len(chunk) {
				c.Write(chunk)
			}
			c.Close()
		}
	}()
	for _, mode := range []string{"sockcat", "sockcat-splice"} {
		name := map[string]string{"sockcat": "plain-unix-copy", "sockcat-splice": "plain-unix-splice"}[mode]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				cmd := exec.Command(os.Args[0], sock)
				cmd.Env = append(os.Environ(), helperEnv+"="+mode)
				consume(b, cmd)
			}
		})
	}
	b.Run("interp", func(b *testing.B) {
		b.SetBytes(size)
		l, err := net.Listen("unix", f.sock)
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		go serveEach(l, func(s *wire.Session) {
			s.Send(wire.NewHello(nil), &wire.LaunchResult{})
			// As the relay does: io.Copy from the program's pipe uses Writer.ReadFrom
			// (full 32 KiB frames).
			io.Copy(s.Writer(wire.Stdout), io.LimitReader(zeros{}, size))
			finish(s, wire.Exit{})
			<-s.Done()
		})
		for b.Loop() {
			cmd := exec.Command(os.Args[0], f.exe, f.exe)
			cmd.Env = append(os.Environ(), helperEnv+"=1", ConfigEnv+"="+f.config)
			consume(b, cmd)
		}
	})
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { return len(p), nil }
