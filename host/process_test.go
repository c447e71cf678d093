package host_test

// The proof suite: `lab relay` and `lab-interop` as real processes over a Unix socket, the
// interpreter invoked exactly as binfmt_misc (flags P and F) invokes it:
//
//	lab-interop /full/guest/path argv0 args...
//
// The "guest" is this machine too, so the guest's view of the share is a directory of its
// own (guestShare) that mirrors the host's (hostShare): the interpreter finds real files
// there, and the relay must map every guest path to the host one.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"lab/internal/labtest"
	"lab/wire"
)

// world is one relay process and the files around it.
type world struct {
	t          testing.TB
	root       string
	hostShare  string // the relay's share (host side), fixtures in bin/
	guestShare string // the guest's view of it
	fallback   string // --fallback-dir
	sock       string
	tokenFile  string
	config     string // the interpreter's config file
	relay      *exec.Cmd
	relayLog   *labtest.SyncBuffer
	relayDone  chan error
}

func needBinaries(t testing.TB) {
	t.Helper()
	buildBinaries(t)
}

// newWorld lays out the shares and config, and starts `lab relay` with extra flags.
func newWorld(t testing.TB, extraRelayFlags ...string) *world {
	t.Helper()
	needBinaries(t)
	root, err := os.MkdirTemp("", "lp") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	root, _ = filepath.EvalSymlinks(root)
	w := &world{
		t:          t,
		root:       root,
		hostShare:  filepath.Join(root, "host"),
		guestShare: filepath.Join(root, "guest", "share"),
		fallback:   filepath.Join(root, "fallback"),
		sock:       filepath.Join(root, "relay.sock"),
		tokenFile:  filepath.Join(root, "token"),
		config:     filepath.Join(root, "interop.conf"),
	}
	for _, share := range []string{w.hostShare, w.guestShare} {
		linkFixtures(t, filepath.Join(share, "bin"))
		for _, d := range []string{"sub/dir with space", "ü"} {
			if err := os.MkdirAll(filepath.Join(share, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A symlink escape that only the host side has: the guest sees a plain file.
	os.Symlink("/bin/true", filepath.Join(w.hostShare, "bin", "escape"))
	os.Link(bin.fixture, filepath.Join(w.guestShare, "bin", "escape"))
	os.MkdirAll(w.fallback, 0o755)
	if err := os.WriteFile(w.tokenFile, append(testToken, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	w.writeConfig(w.config, "unix:"+w.sock, w.tokenFile)
	w.startRelay(extraRelayFlags...)
	return w
}

// writeConfig writes an interpreter config; the elf format rule lets the interpreter send
// the (ELF) fixtures, which binfmt_misc would never hand it in a real guest.
func (w *world) writeConfig(path, relay, tokenFile string) {
	w.t.Helper()
	conf := fmt.Sprintf("relay = %s\ntoken_file = %s\nshare = %s %s\nformat = elf 0 7f454c46\nconnect_timeout = 5s\nhandshake_timeout = 30s\n",
		strconv.Quote(relay), strconv.Quote(tokenFile), strconv.Quote(w.guestShare), strconv.Quote(w.hostShare))
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) startRelay(extra ...string) {
	w.t.Helper()
	args := append([]string{"--log-level", "info", "relay", "--listen", "unix:" + w.sock, "--token-file", w.tokenFile,
		"--share", w.hostShare + ":" + w.guestShare, "--fallback-dir", w.fallback,
		"--allow", "hostecho=" + filepath.Join(w.hostShare, "bin", "echoargs")}, extra...)
	cmd := exec.Command(bin.lab, args...)
	cmd.Env = append(os.Environ(), "UNSETME=from-the-host", "KEEPME=host")
	// A test binary that dies (a timeout panic) takes its relay with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	w.relayLog = &labtest.SyncBuffer{}
	cmd.Stderr = w.relayLog
	out, err := cmd.StdoutPipe()
	if err != nil {
		w.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	w.relay = cmd
	line, err := bufio.NewReader(out).ReadString('\n')
	if want := "lab relay: listening on unix:" + w.sock + "\n"; line != want {
		cmd.Process.Kill()
		cmd.Wait()
		w.t.Fatalf("relay said %q (%v), want %q; log:\n%s", line, err, want, w.relayLog)
	}
	go io.Copy(io.Discard, out)
	w.relayDone = make(chan error, 1)
	go func() { w.relayDone <- cmd.Wait() }()
	w.t.Cleanup(func() {
		w.stopRelay()
		if w.t.Failed() {
			w.t.Logf("relay log:\n%s", w.relayLog)
		}
	})
}

// stopRelay sends SIGTERM and waits; it reports a relay that did not exit 0.
func (w *world) stopRelay() {
	if w.relay == nil {
		return
	}
	w.relay.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-w.relayDone:
		if err != nil {
			w.t.Errorf("relay exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		w.relay.Process.Kill()
		<-w.relayDone
		w.t.Errorf("relay did not exit within 30s of SIGTERM")
	}
	w.relay = nil
}

// guestPath is the guest path of a fixture.
func (w *world) guestPath(name string) string { return filepath.Join(w.guestShare, "bin", name) }

// interop returns the interpreter command for a fixture, as binfmt_misc runs it.
func (w *world) interop(name, argv0 string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin.interop, append([]string{w.guestPath(name), argv0}, args...)...)
	cmd.Env = append(os.Environ(), "LAB_INTEROP_CONFIG="+w.config)
	cmd.Dir = w.guestShare
	return cmd
}

// output runs cmd and returns stdout, stderr and the exit code.
func output(t testing.TB, cmd *exec.Cmd, stdin string) (string, string, int) {
	t.Helper()
	var o, e bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("run %v: %v", cmd.Args, err)
		}
		code = ee.ExitCode()
	}
	return o.String(), e.String(), code
}

type echoed struct {
	Args []string
	Cwd  string
	Env  []string
}

func parseEcho(t testing.TB, out, errOut string) echoed {
	t.Helper()
	var e echoed
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatalf("echoargs output %q (stderr %q): %v", out, errOut, err)
	}
	return e
}

func (e echoed) env(name string) (string, bool) {
	for _, kv := range e.Env {
		if k, v, _ := strings.Cut(kv, "="); k == name {
			return v, true
		}
	}
	return "", false
}

func TestProofArguments(t *testing.T) {
	w := newWorld(t)
	args := []string{"with space", "", `"double"`, "'single'", `back\slash`, "ünï €", "tab\tnew\nline", "  lead", "*.c", "$HOME", "-flag", ""}
	out, errOut, code := output(t, w.interop("echoargs", "./echoargs", args...), "")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	got := parseEcho(t, out, errOut)
	if want := append([]string{"./echoargs"}, args...); !slices.Equal(got.Args, want) {
		t.Errorf("argv\n got %q\nwant %q", got.Args, want)
	}
	if errOut != "" {
		t.Errorf("stderr %q", errOut)
	}
}

// bigSize is the byte count of the large stream tests: LAB_TEST_BIG_BYTES, else 1 GiB
// (measured: each direction takes about 5 s, and about 20 s under the race detector with
// the relay built with -race too).
func bigSize(t testing.TB) int64 {
	if s := os.Getenv("LAB_TEST_BIG_BYTES"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			t.Fatalf("LAB_TEST_BIG_BYTES=%q: want a byte count", s)
		}
		return n
	}
	return 1 << 30
}

// stream is the fixture's deterministic byte stream (testdata/fixture NewStream).
func stream(seed uint64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	return rand.NewChaCha8(key)
}

func hashOf(r io.Reader, n int64) string {
	h := sha256.New()
	io.CopyN(h, r, n)
	return hex.EncodeToString(h.Sum(nil))
}

func TestProofBigStdin(t *testing.T) {
	w := newWorld(t)
	n := bigSize(t)
	want := make(chan string, 1)
	go func() { want <- hashOf(stream(7), n) }()
	cmd := w.interop("sha256", "sha256")
	cmd.Stdin = io.LimitReader(stream(7), n)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v, stderr %q", err, e.String())
	}
	t.Logf("%d bytes through stdin in %v", n, time.Since(start))
	if got, exp := strings.TrimSpace(o.String()), fmt.Sprintf("%s %d", <-want, n); got != exp {
		t.Errorf("host program read %q, want %q", got, exp)
	}
}

func TestProofBigStdout(t *testing.T) {
	w := newWorld(t)
	n := bigSize(t)
	want := make(chan string, 1)
	go func() { want <- hashOf(stream(11), n) }()
	cmd := w.interop("gen", "gen", strconv.FormatInt(n, 10), "11")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var e bytes.Buffer
	cmd.Stderr = &e
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	got, _ := io.Copy(h, out)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v, stderr %q", err, e.String())
	}
	t.Logf("%d bytes out of stdout in %v", got, time.Since(start))
	if got != n || hex.EncodeToString(h.Sum(nil)) != <-want {
		t.Errorf("stdout: %d bytes with the wrong sha256 or length (want %d)", got, n)
	}
}

func TestProofStdoutStderrSeparate(t *testing.T) {
	w := newWorld(t)
	const n = 20000
	out, errOut, code := output(t, w.interop("interleave", "interleave", strconv.Itoa(n)), "")
	var wantOut, wantErr strings.Builder
	for i := range n {
		fmt.Fprintf(&wantOut, "out %d\n", i)
		fmt.Fprintf(&wantErr, "err %d\n", i)
	}
	if code != 0 || out != wantOut.String() || errOut != wantErr.String() {
		t.Errorf("exit %d; stdout ok=%v (%d bytes); stderr ok=%v (%d bytes)", code, out == wantOut.String(), len(out), errOut == wantErr.String(), len(errOut))
	}
}

func TestProofExitCodes(t *testing.T) {
	w := newWorld(t)
	for _, c := range []int{0, 1, 7, 255} {
		_, errOut, code := output(t, w.interop("exit", "exit", strconv.Itoa(c)), "")
		if code != c {
			t.Errorf("exit %d: interpreter exited %d (stderr %q)", c, code, errOut)
		}
	}
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGSEGV} {
		_, errOut, code := output(t, w.interop("killself", "killself", strconv.Itoa(int(sig))), "")
		if code != 128+int(sig) {
			t.Errorf("killed by %v: interpreter exited %d, want %d (stderr %q)", sig, code, 128+int(sig), errOut)
		}
	}
}

func TestProofStdinEOF(t *testing.T) {
	w := newWorld(t)
	out, errOut, code := output(t, w.interop("cat", "cat"), "hello\nworld")
	if code != 0 || out != "hello\nworld" || errOut != "" {
		t.Errorf("cat: exit %d stdout %q stderr %q", code, out, errOut)
	}
	// No stdin at all (/dev/null).
	cmd := w.interop("cat", "cat")
	var o bytes.Buffer
	cmd.Stdout = &o
	if err := cmd.Run(); err != nil || o.Len() != 0 {
		t.Errorf("cat </dev/null: %v, %q", err, o.String())
	}
}

func TestProofHeadEndsProducer(t *testing.T) {
	w := newWorld(t)
	pidFile := filepath.Join(w.root, "producer.pid")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	producer := w.interop("produce", "produce", pidFile)
	producer.Stdout = pw
	var perr bytes.Buffer
	producer.Stderr = &perr
	head := exec.Command("head", "-1")
	head.Stdin = pr
	var hout bytes.Buffer
	head.Stdout = &hout
	if err := producer.Start(); err != nil {
		t.Fatal(err)
	}
	if err := head.Start(); err != nil {
		t.Fatal(err)
	}
	pr.Close()
	pw.Close() // only the interpreter and head hold the pipe now
	if err := head.Wait(); err != nil || hout.String() != "line 0\n" {
		t.Fatalf("head: %v %q", err, hout.String())
	}
	done := make(chan error, 1)
	go func() { done <- producer.Wait() }()
	select {
	case err := <-done:
		t.Logf("interpreter ended: %v (stderr %q)", err, perr.String())
	case <-time.After(60 * time.Second):
		producer.Process.Kill()
		t.Fatal("the interpreter did not end after head exited")
	}
	waitGone(t, readPids(t, pidFile))
}

func TestProofSignals(t *testing.T) {
	w := newWorld(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT} {
		cmd := w.interop("waitsig", "waitsig")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var e bytes.Buffer
		cmd.Stderr = &e
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(out)
		if line, err := br.ReadString('\n'); line != "ready\n" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("%v: fixture said %q, %v (stderr %q)", sig, line, err, e.String())
		}
		cmd.Process.Signal(sig)
		rest, _ := io.ReadAll(br)
		err = cmd.Wait()
		if want := fmt.Sprintf("got %v\n", sig); string(rest) != want || err != nil {
			t.Errorf("%v: host program said %q (want %q), interpreter: %v, stderr %q", sig, rest, want, err, e.String())
		}
	}
}

func TestProofKillInterpreter(t *testing.T) {
	w := newWorld(t)
	pidFile := filepath.Join(w.root, "sleeper.pid")
	cmd := w.interop("sleeper", "sleeper", pidFile)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("fixture said %q", line)
	}
	pids := readPids(t, pidFile) // the program and a child in its process group
	cmd.Process.Kill()
	cmd.Wait()
	waitGone(t, pids)
}

func TestProofTerminal(t *testing.T) {
	w := newWorld(t)
	cmd := w.interop("tty", "tty")
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 31, Cols: 97})
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	br := bufio.NewReader(ptmx)
	var seen strings.Builder
	readUntil := func(substr string) {
		t.Helper()
		for !strings.Contains(seen.String(), substr) {
			line, err := br.ReadString('\n')
			seen.WriteString(line)
			if err != nil {
				t.Fatalf("terminal output %q: %v (wanted %q)", seen.String(), err, substr)
			}
		}
	}
	readUntil("tty true true true size 31x97")
	// A new size on the interpreter's terminal: the kernel sends it SIGWINCH, and the host
	// program's pty must follow.
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 45, Cols: 132}); err != nil {
		t.Fatal(err)
	}
	readUntil("resized 45x132")
	if err := cmd.Wait(); err != nil {
		t.Errorf("interpreter: %v; terminal output %q", err, seen.String())
	}
}

func TestProofCwd(t *testing.T) {
	w := newWorld(t)
	tests := []struct {
		guestDir, hostDir string
		warn              bool
	}{
		{w.guestShare, w.hostShare, false},
		{filepath.Join(w.guestShare, "sub", "dir with space"), filepath.Join(w.hostShare, "sub", "dir with space"), false},
		{filepath.Join(w.guestShare, "ü"), filepath.Join(w.hostShare, "ü"), false},
		{w.root, w.fallback, true},
		{"/", w.fallback, true},
	}
	// By default the fallback is silent on the program's stderr (WSL writes nothing of its
	// own there); the interpreter config's cwd_warning (wsl.conf [lab] cwdWarning) asks for
	// the line.
	for _, knob := range []bool{false, true} {
		if knob {
			f, err := os.OpenFile(w.config, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString("cwd_warning = true\n")
			f.Close()
		}
		for _, tt := range tests {
			cmd := w.interop("echoargs", "echoargs")
			cmd.Dir = tt.guestDir
			out, errOut, code := output(t, cmd, "")
			got := parseEcho(t, out, errOut)
			if code != 0 || got.Cwd != tt.hostDir {
				t.Errorf("guest cwd %s: host cwd %q (exit %d), want %q", tt.guestDir, got.Cwd, code, tt.hostDir)
			}
			wantErr := ""
			if tt.warn && knob {
				wantErr = fmt.Sprintf("lab: warning: the working directory %s is not in a shared folder; the host program runs in %s\n", tt.guestDir, w.fallback)
			}
			if errOut != wantErr {
				t.Errorf("cwd_warning %v, guest cwd %s: stderr %q, want %q", knob, tt.guestDir, errOut, wantErr)
			}
		}
	}
}

func TestProofLabEnv(t *testing.T) {
	w := newWorld(t)
	cmd := w.interop("echoargs", "echoargs")
	cmd.Env = append(cmd.Env,
		"LABENV=P/p:L/l:U/u:W/w:PLAIN:UNSETME:EMPTY:KEEPME/p",
		"P="+filepath.Join(w.guestShare, "sub"),
		"L="+w.guestShare+"/ü:/usr/bin:relative/x",
		"U=guest-only", "W=to-host", "PLAIN=a b=c", "EMPTY=", "NOTNAMED=1",
	)
	out, errOut, code := output(t, cmd, "")
	got := parseEcho(t, out, errOut)
	if code != 0 {
		t.Fatalf("exit %d stderr %q", code, errOut)
	}
	want := map[string]string{
		"P":      filepath.Join(w.hostShare, "sub"),
		"L":      w.hostShare + "/ü:/usr/bin:relative/x",
		"W":      "to-host",
		"PLAIN":  "a b=c",
		"EMPTY":  "",
		"KEEPME": "host", // named but unset in the guest: removed... see below
		"LABENV": "P/p:L/l:U/u:W/w:PLAIN:UNSETME:EMPTY:KEEPME/p",
	}
	delete(want, "KEEPME")
	for k, v := range want {
		if g, ok := got.env(k); !ok || g != v {
			t.Errorf("%s = %q (set %v), want %q", k, g, ok, v)
		}
	}
	// U is guest-only (/u); NOTNAMED is not in LABENV; UNSETME and KEEPME are named but unset
	// in the guest, so the host program does not inherit the relay's values.
	for _, k := range []string{"U", "NOTNAMED", "UNSETME", "KEEPME", "LAB_INTEROP_CONFIG"} {
		if g, ok := got.env(k); ok {
			t.Errorf("%s crossed (= %q)", k, g)
		}
	}
}

func TestProofExposedCommand(t *testing.T) {
	w := newWorld(t)
	stub := filepath.Join(w.root, "hostecho")
	b, err := wire.FormatStub("hostecho")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(stub, b, 0o755)
	cmd := exec.Command(bin.interop, stub, "hostecho", "x y")
	cmd.Env = append(os.Environ(), "LAB_INTEROP_CONFIG="+w.config)
	cmd.Dir = w.guestShare
	out, errOut, code := output(t, cmd, "")
	got := parseEcho(t, out, errOut)
	if code != 0 || !slices.Equal(got.Args, []string{"hostecho", "x y"}) {
		t.Errorf("exposed command: exit %d args %q stderr %q", code, got.Args, errOut)
	}
}

func TestProofRelayDown(t *testing.T) {
	w := newWorld(t)
	// A relay killed outright leaves its socket file behind: nobody answers on it.
	w.relay.Process.Kill()
	<-w.relayDone
	w.relay = nil
	out, errOut, code := output(t, w.interop("echoargs", "echoargs"), "")
	if want := relayDownMessage(w.sock, "connection refused"); code != relayDownCode || out != "" || errOut != want {
		t.Errorf("relay killed: exit %d stdout %q stderr %q; want exit %d stderr %q", code, out, errOut, relayDownCode, want)
	}
	// A relay stopped in order removes it.
	w.startRelay()
	w.stopRelay()
	out, errOut, code = output(t, w.interop("echoargs", "echoargs"), "")
	if want := relayDownMessage(w.sock, "no such file or directory"); code != relayDownCode || out != "" || errOut != want {
		t.Errorf("relay stopped: exit %d stdout %q stderr %q; want exit %d stderr %q", code, out, errOut, relayDownCode, want)
	}
}

// TestProofRefusals: bad and hostile requests are refused while a parallel session runs to
// completion.
func TestProofRefusals(t *testing.T) {
	w := newWorld(t)
	n := int64(64 << 20)
	parallel := w.interop("sha256", "sha256")
	pin, err := parallel.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var pout, perr bytes.Buffer
	parallel.Stdout, parallel.Stderr = &pout, &perr
	if err := parallel.Start(); err != nil {
		t.Fatal(err)
	}
	feed := make(chan struct{})
	go func() {
		io.CopyN(pin, stream(3), n/2)
		<-feed // the rest once every refusal has been seen
		io.CopyN(pin, stream(4), n/2)
		pin.Close()
	}()

	t.Run("bad token", func(t *testing.T) {
		bad := filepath.Join(w.root, "badtoken")
		os.WriteFile(bad, []byte("not-the-token-at-all"), 0o600)
		conf := filepath.Join(w.root, "bad.conf")
		w.writeConfig(conf, "unix:"+w.sock, bad)
		cmd := w.interop("echoargs", "echoargs")
		cmd.Env = append(os.Environ(), "LAB_INTEROP_CONFIG="+conf)
		out, errOut, code := output(t, cmd, "")
		if code != 126 || out != "" || !strings.Contains(errOut, "access denied") {
			t.Errorf("bad token: exit %d stdout %q stderr %q", code, out, errOut)
		}
	})
	t.Run("symlink escape", func(t *testing.T) {
		out, errOut, code := output(t, w.interop("escape", "escape"), "")
		if code != 126 || out != "" || !strings.Contains(errOut, "resolves outside the shared folders") {
			t.Errorf("symlink escape: exit %d stdout %q stderr %q", code, out, errOut)
		}
	})
	t.Run("outside shares", func(t *testing.T) {
		cmd := exec.Command(bin.interop, bin.fixture, "fixture")
		cmd.Env = append(os.Environ(), "LAB_INTEROP_CONFIG="+w.config)
		out, errOut, code := output(t, cmd, "")
		if code != 126 || out != "" || !strings.Contains(errOut, "not in a shared folder") {
			t.Errorf("outside shares: exit %d stdout %q stderr %q", code, out, errOut)
		}
	})
	hello, _ := wire.AppendMessage(nil, wire.NewHello(testToken))
	dotdot, _ := wire.AppendMessage(nil, &wire.Launch{Format: "elf", Path: w.guestShare + "/bin/../bin/true", Argv: []string{"true"}, Cwd: "/"})
	oversize := binary.BigEndian.AppendUint32(nil, wire.MaxFrame+1)
	raw := []struct {
		name string
		send []byte
		want wire.Errno
	}{
		{"dotdot", append(append([]byte(nil), hello...), dotdot...), wire.EPERM},
		{"oversize frame", append(append([]byte(nil), hello...), append(oversize, byte(wire.TypeLaunch))...), wire.E2BIG},
		{"garbage", []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage garbage"), wire.EPROTO},
		{"garbage hello", []byte{0, 0, 0, 5, byte(wire.TypeHello), 'N', 'O', 'P', 'E'}, wire.EPROTO},
	}
	for _, tt := range raw {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("unix", w.sock)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write(tt.send)
			conn.SetDeadline(time.Now().Add(30 * time.Second))
			buf := make([]byte, wire.MaxPayload)
			m, err := wire.ReadMessage(conn, buf)
			if _, ok := m.(*wire.Hello); !ok {
				t.Fatalf("reply %T %v, want a Hello", m, err)
			}
			m, err = wire.ReadMessage(conn, buf)
			if lr, ok := m.(*wire.LaunchResult); !ok || lr.Errno != tt.want {
				t.Fatalf("reply %+v %v, want errno %d", m, err, tt.want)
			}
		})
	}
	close(feed)
	if err := parallel.Wait(); err != nil {
		t.Fatalf("parallel session: %v, stderr %q", err, perr.String())
	}
	h := sha256.New()
	io.CopyN(h, stream(3), n/2)
	io.CopyN(h, stream(4), n/2)
	if got, want := strings.TrimSpace(pout.String()), fmt.Sprintf("%x %d", h.Sum(nil), n); got != want {
		t.Errorf("parallel session: %q, want %q", got, want)
	}
}

func TestProofConcurrentLaunches(t *testing.T) {
	w := newWorld(t)
	// A hundred interpreters at once on a loaded 2-core host (make test runs packages in
	// parallel, -race) may send their hello after the relay's 5 s hello timeout: the relay
	// answers EAGAIN and a real interpreter tries again within its connect timeout, 30 s
	// by default. The world's 5 s would leave no time for that retry; this test is about
	// every launch coming out right, so it gives them the default's room and more.
	conf, err := os.ReadFile(w.config)
	if err != nil {
		t.Fatal(err)
	}
	conf = bytes.Replace(conf, []byte("connect_timeout = 5s\n"), []byte("connect_timeout = 2m\n"), 1)
	if err := os.WriteFile(w.config, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			arg := fmt.Sprintf("launch %d ü", i)
			cmd := w.interop("echoargs", "echoargs", arg)
			var o, e bytes.Buffer
			cmd.Stdout, cmd.Stderr = &o, &e
			if err := cmd.Run(); err != nil {
				errs <- fmt.Sprintf("launch %d: %v, stderr %q", i, err, e.String())
				return
			}
			var got echoed
			if err := json.Unmarshal(o.Bytes(), &got); err != nil || !slices.Equal(got.Args, []string{"echoargs", arg}) {
				errs <- fmt.Sprintf("launch %d: output %q", i, o.String())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestProofRelayDrain: SIGTERM stops the relay accepting, and a running program is killed
// after the grace period; the relay exits 0.
func TestProofRelayDrain(t *testing.T) {
	w := newWorld(t, "--grace", "1s")
	pidFile := filepath.Join(w.root, "sleeper.pid")
	cmd := w.interop("sleeper", "sleeper", pidFile)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("fixture said %q", line)
	}
	pids := readPids(t, pidFile)
	w.relay.Process.Signal(syscall.SIGTERM)
	if err := <-w.relayDone; err != nil {
		t.Errorf("relay exit after SIGTERM: %v", err)
	}
	w.relay = nil
	waitGone(t, pids)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Errorf("interpreter of a drained session: %v, want a failure", err)
	}
	if !strings.Contains(w.relayLog.String(), "drain deadline reached") {
		t.Errorf("relay log lacks the drain:\n%s", w.relayLog)
	}
}

// What the interpreter prints, and exits with, when no relay listens at its address
// (lab/guest), with the reason from connect(2).
const relayDownCode = 126

func relayDownMessage(sock, reason string) string {
	return fmt.Sprintf("lab-interop: cannot reach the relay at unix:%s: %s\n", sock, reason)
}

// TestProofOrphansReaped: lab relay is the child subreaper; a host program's child that
// outlives it is reparented to the relay and reaped when it exits (no zombie left).
func TestProofOrphansReaped(t *testing.T) {
	w := newWorld(t)
	pidFile := filepath.Join(w.root, "orphan.pid")
	_, errOut, code := output(t, w.interop("orphan", "orphan", pidFile), "")
	if code != 0 {
		t.Fatalf("exit %d stderr %q", code, errOut)
	}
	pids := readPids(t, pidFile)
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pids[0])); err == nil {
		// Still running: its parent must now be the relay.
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		if len(f) > 1 && f[1] != strconv.Itoa(w.relay.Process.Pid) {
			t.Errorf("orphan %d (state %s) has parent %s, want the relay %d", pids[0], f[0], f[1], w.relay.Process.Pid)
		}
	}
	waitGone(t, pids)
}

// TestProofWine runs a real PE file through the relay's Wine runner in a prefix of its own.
// It needs Wine and the go1.21.4 toolchain (for a PE file that Wine 8 can run); it skips,
// saying which is missing, without them.
func TestProofWine(t *testing.T) {
	wine, err := exec.LookPath("wine")
	if err != nil {
		if _, err := os.Stat("/usr/lib/wine/wine64"); err != nil {
			t.Skip("wine is not installed (apt-get install --no-install-recommends wine64 wine)")
		}
		wine = "/usr/lib/wine/wine64"
	}
	src, err := os.ReadFile("testdata/pefixture/main.go.txt")
	if err != nil {
		t.Fatal(err)
	}
	mod := t.TempDir()
	os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module pefixture\n\ngo 1.21\n"), 0o644)
	os.WriteFile(filepath.Join(mod, "main.go"), src, 0o644)
	exe := filepath.Join(mod, "fx.exe")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", exe, ".")
	build.Dir = mod
	build.Env = append(os.Environ(), "GOTOOLCHAIN=go1.21.4", "GOOS=windows", "GOARCH=amd64", "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	if out, err := build.CombinedOutput(); err != nil {
		t.Skipf("cannot build a PE fixture Wine 8 runs (needs the go1.21.4 toolchain): %v\n%s", err, out)
	}

	prefix := filepath.Join(t.TempDir(), "wineprefix")
	w := newWorld(t, "--wine", wine, "--wine-prefix", prefix)
	t.Cleanup(func() { stopWine(t, prefix) })
	for _, dir := range []string{w.hostShare, w.guestShare} {
		b, _ := os.ReadFile(exe)
		if err := os.WriteFile(filepath.Join(dir, "fx.exe"), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) (string, string, int) {
		cmd := exec.Command(bin.interop, append([]string{filepath.Join(w.guestShare, "fx.exe"), "fx.exe"}, args...)...)
		cmd.Env = append(os.Environ(), "LAB_INTEROP_CONFIG="+w.config)
		cmd.Dir = w.guestShare
		return output(t, cmd, "")
	}
	// The first run creates the prefix (Wine says so on stderr).
	out, errOut, code := run("a b", "ü€", "", "7")
	if want := `["a b" "ü€" "" "7"]` + "\n"; out != want || code != 7 || !strings.Contains(errOut, "to stderr\n") {
		t.Fatalf("first run: exit %d stdout %q stderr %q; want exit 7 stdout %q", code, out, errOut, want)
	}
	// A warm run: nothing of Wine's own on stderr (WINEDEBUG=-all), the exit code is the
	// program's.
	out, errOut, code = run("x", "0")
	if out != `["x" "0"]`+"\n" || errOut != "to stderr\n" || code != 0 {
		t.Errorf("warm run: exit %d stdout %q stderr %q", code, out, errOut)
	}
	out, _, code = run("255")
	if out != `["255"]`+"\n" || code != 255 {
		t.Errorf("exit 255: exit %d stdout %q", code, out)
	}
}

// stopWine ends the prefix's wineserver and removes the prefix and the server's socket
// directory (Debian's wine keeps it in $TMPDIR/wine-XXXXXX, named in $WINEPREFIX/wineserver).
func stopWine(t *testing.T, prefix string) {
	for _, args := range [][]string{{"-k"}, {"-w"}} {
		cmd := exec.Command("wineserver", args...)
		cmd.Env = append(os.Environ(), "WINEPREFIX="+prefix)
		cmd.Run()
	}
	if name, err := os.ReadFile(filepath.Join(prefix, "wineserver")); err == nil {
		if n := strings.TrimSpace(string(name)); strings.HasPrefix(n, "wine-") && !strings.ContainsAny(n, "/.") {
			os.RemoveAll(filepath.Join(os.TempDir(), n))
		}
	}
	os.RemoveAll(prefix)
}

// A launch over MaxSessions waits for a slot for as long as it takes, past the
// interpreter's handshake timeout: the relay sends its Hello before it waits, and the
// interpreter, so told that it is authorised and queued, waits for the LaunchResult.
func TestRelayQueuedLaunchOutlastsHandshakeTimeout(t *testing.T) {
	w := newWorld(t, "--max-sessions", "1")
	conf := filepath.Join(w.root, "short.conf")
	w.writeConfig(conf, "unix:"+w.sock, w.tokenFile)
	b, _ := os.ReadFile(conf)
	os.WriteFile(conf, append(b, "handshake_timeout = 300ms\n"...), 0o600)

	holder := w.interop("cat", "cat") // holds the only slot until its stdin closes
	holder.Env = append(holder.Env, "LAB_INTEROP_CONFIG="+conf)
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var hout bytes.Buffer
	holder.Stdout = &hout
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(stdin, "held\n")
	for !strings.Contains(w.relayLog.String(), "relay: launch") {
		time.Sleep(10 * time.Millisecond)
	}
	queued := w.interop("echoargs", "echoargs", "queued")
	queued.Env = append(queued.Env, "LAB_INTEROP_CONFIG="+conf)
	var qout, qerr bytes.Buffer
	queued.Stdout, queued.Stderr = &qout, &qerr
	if err := queued.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // three handshake timeouts
	stdin.Close()
	if err := holder.Wait(); err != nil || hout.String() != "held\n" {
		t.Errorf("holder: %v, stdout %q", err, hout.String())
	}
	if err := queued.Wait(); err != nil || !strings.Contains(qout.String(), "queued") {
		t.Errorf("queued launch: %v, stdout %q, stderr %q", err, qout.String(), qerr.String())
	}
}
