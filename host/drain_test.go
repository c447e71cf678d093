package host_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"lab/wire"
)

// TestProofSlowReaderAfterExit: a guest that reads the program's output only long after the
// program exited (`prog | less`, `prog | (sleep 3; wc -c)`) still receives every byte, on a
// pipe and on a terminal. The relay's output drain bounds only idle time with nothing to
// read; output waiting for the guest's credit is never cut (issue 9). The fixture (fill)
// writes until everything downstream is full and stays full, then exits: part of its output
// is still in the host pipe or pty when it exits, and the guest reads it only after delay.
func TestProofSlowReaderAfterExit(t *testing.T) {
	w := newWorld(t)
	const n = 3 << 20
	for _, tty := range []bool{false, true} {
		for _, delay := range []time.Duration{0, 3 * time.Second, 10 * time.Second} {
			name := fmt.Sprintf("pipe/%v", delay)
			if tty {
				name = fmt.Sprintf("tty/%v", delay)
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				seed := uint64(20 + delay/time.Second)
				countFile := filepath.Join(w.root, fmt.Sprintf("fill-%v-%d", tty, seed))
				cmd := w.interop("fill", "fill", strconv.Itoa(n), strconv.FormatUint(seed, 10), countFile)
				var got []byte
				var errOut bytes.Buffer
				if tty {
					ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 80})
					if err != nil {
						t.Fatal(err)
					}
					defer ptmx.Close()
					time.Sleep(delay) // the program has long exited
					got, err = io.ReadAll(ptmx)
					if err != nil && !errors.Is(err, syscall.EIO) { // EIO: the interpreter closed the terminal
						t.Fatalf("reading the terminal: %v", err)
					}
				} else {
					out, err := cmd.StdoutPipe()
					if err != nil {
						t.Fatal(err)
					}
					cmd.Stderr = &errOut
					if err := cmd.Start(); err != nil {
						t.Fatal(err)
					}
					time.Sleep(delay) // the program has long exited
					got, _ = io.ReadAll(out)
				}
				err := cmd.Wait()
				b, rerr := os.ReadFile(countFile)
				if rerr != nil {
					t.Fatalf("the program did not finish: %v (stderr %q)", rerr, errOut.String())
				}
				count, _ := strconv.ParseInt(string(b), 10, 64)
				want := expectedOutput(seed, count, tty)
				t.Logf("the program wrote %d bytes", count)
				if err != nil {
					var ee *exec.ExitError
					if !errors.As(err, &ee) {
						t.Fatal(err)
					}
					t.Errorf("interpreter: %v, stderr %q", err, errOut.String())
				}
				if len(got) != len(want) || sum(got) != sum(want) {
					t.Errorf("received %d bytes (sha256 %s), want %d (sha256 %s)", len(got), sum(got), len(want), sum(want))
				}
			})
		}
	}
}

// expectedOutput is what the guest receives from `gen n seed`: on a terminal, the host
// pty's line discipline turns each "\n" into "\r\n" (the guest's own terminal is raw).
func expectedOutput(seed uint64, n int64, tty bool) []byte {
	b, _ := io.ReadAll(io.LimitReader(stream(seed), n))
	if tty {
		b = bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
	}
	return b
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestProofExposedArgv0: an exposed command runs with its exposed name as argv[0], whatever
// argv[0] the guest sent, so exposing one applet of a multi-call binary (busybox as `ls`)
// does not expose the others (argv[0] `sh` would be a shell) (issue 9). The guest's other
// arguments are passed on unchanged.
func TestProofExposedArgv0(t *testing.T) {
	w := newWorld(t)
	w.stopRelay()
	w.startRelay("--allow", "ls="+filepath.Join(w.hostShare, "bin", "multicall"))
	stub := filepath.Join(w.root, "ls")
	b, err := wire.FormatStub("ls")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stub, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, argv0 := range []string{"ls", "sh", "/bin/sh", "ls -l"} {
		cmd := exec.Command(bin.interop, stub, argv0, "-c", "id")
		cmd.Env = append(os.Environ(), "LAB_INTEROP_CONFIG="+w.config)
		cmd.Dir = w.guestShare
		out, errOut, code := output(t, cmd, "")
		if want := `applet ls ["-c" "id"]` + "\n"; out != want || code != 0 || errOut != "" {
			t.Errorf("argv[0] %q: exit %d stdout %q stderr %q; want exit 0 stdout %q", argv0, code, out, errOut, want)
		}
	}
}

// TestRelayTrailingSlash: a program path ending in '/' is refused with its own message (it
// used to be cleaned and run: `SHARE/prog/` ran prog).
func TestRelayTrailingSlash(t *testing.T) {
	ip := startInproc(t, nil, nil)
	for _, p := range []string{"/mnt/host/bin/echoargs/", "/mnt/host/bin/", "/mnt/host/"} {
		res := guestRun(t, ip.sock, testToken, launchOf(p), nil)
		want := "lab relay: " + p + ": a program path cannot end in '/' (that names a directory, not a file)"
		if res.launch.Errno != wire.EPERM || res.launch.Message != want || res.exit != nil {
			t.Errorf("%s: errno %d message %q (exit %v), want errno %d message %q", p, res.launch.Errno, res.launch.Message, res.exit, wire.EPERM, want)
		}
	}
}
