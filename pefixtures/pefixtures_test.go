package pefixtures_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"lab/pefixtures"
	"lab/wineprefix"
	"lab/wineprefix/winetest"
)

var (
	shared   winetest.Shared
	fixOnce  sync.Once
	fixtures map[string]string
	fixErr   error
)

func TestMain(m *testing.M) { shared.Main(m) }

// built returns the fixtures in the cache, building them once (no Wine needed for that).
func built(t testing.TB) map[string]string {
	t.Helper()
	fixOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		fixtures, fixErr = pefixtures.Build(ctx, "")
	})
	if fixErr != nil {
		t.Fatal(fixErr)
	}
	return fixtures
}

// setup returns the warm shared prefix and the fixtures copied into its drive_c\fixtures (as
// a WSL user would put them under /mnt/c).
func setup(t testing.TB) (*wineprefix.Prefix, map[string]string) {
	t.Helper()
	built(t)
	p := shared.Get(t)
	fx, err := pefixtures.Build(context.Background(), filepath.Join(p.DriveC(), "fixtures"))
	if err != nil {
		t.Fatal(err)
	}
	return p, fx
}

type result struct {
	stdout, stderr string
	code           int
}

func run(t testing.TB, p *wineprefix.Prefix, dir string, stdin []byte, env []string, exe string, args ...string) result {
	t.Helper()
	var in io.Reader
	if stdin != nil {
		in = bytes.NewReader(stdin)
	}
	out, errs, code := winetest.Run(t, p, dir, in, env, exe, args...)
	return result{out, errs, code}
}

func TestBuildCached(t *testing.T) {
	fx := built(t)
	for _, n := range pefixtures.Names {
		b, err := os.ReadFile(fx[n])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("MZ")) {
			t.Errorf("%s is not a PE file", n)
		}
	}
	// A second build comes from the cache and gives the same files.
	start := time.Now()
	again, err := pefixtures.Build(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cached Build: %v", time.Since(start))
	for _, n := range pefixtures.Names {
		a, _ := os.ReadFile(fx[n])
		b, _ := os.ReadFile(again[n])
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between builds", n)
		}
	}
}

func TestArgv(t *testing.T) {
	p, fx := setup(t)
	args := []string{"plain", "a b", `q"x`, "", `back\slash`, `trail\`, `c:\dir with space\`, "*.c",
		"ünï €", "日本語", "%PATH%", "it's", `a\"b`, "  lead", "tab\there"}
	r := run(t, p, p.DriveC(), nil, nil, fx[pefixtures.EchoArgs], args...)
	if want := strings.Join(args, "\n") + "\n"; r.stdout != want || r.code != 0 {
		t.Errorf("echoargs:\n got %q (stderr %q, exit %d)\nwant %q", r.stdout, r.stderr, r.code, want)
	}
	if r := run(t, p, p.DriveC(), nil, nil, fx[pefixtures.EchoArgs]); r.stdout != "" || r.code != 0 {
		t.Errorf("echoargs without arguments = %q, %d", r.stdout, r.code)
	}
}

func TestStdin(t *testing.T) {
	p, fx := setup(t)
	data := make([]byte, 1<<20)
	rand.Read(data)
	data = append(data, "\r\n\x00\x1a last line without newline"...)
	if r := run(t, p, p.DriveC(), data, nil, fx[pefixtures.Cat]); r.stdout != string(data) || r.code != 0 {
		t.Errorf("cat: %d bytes back of %d, exit %d, stderr %q", len(r.stdout), len(data), r.code, r.stderr)
	}
	if r := run(t, p, p.DriveC(), nil, nil, fx[pefixtures.Cat]); r.stdout != "" || r.code != 0 {
		t.Errorf("cat </dev/null = %q, %d", r.stdout, r.code)
	}
	in := "hello wörld\nsecond line\nno newline"
	if r := run(t, p, p.DriveC(), []byte(in), nil, fx[pefixtures.Upper]); r.stdout != strings.ToUpper(in) || r.code != 0 {
		t.Errorf("upper = %q, %d; want %q", r.stdout, r.code, strings.ToUpper(in))
	}
}

func TestStdoutStderr(t *testing.T) {
	p, fx := setup(t)
	r := run(t, p, p.DriveC(), nil, nil, fx[pefixtures.Stderr])
	if r.stdout != "stdout 0\nstdout 1\nstdout 2\n" || r.stderr != "stderr 0\nstderr 1\nstderr 2\n" || r.code != 0 {
		t.Errorf("stderr.exe: stdout %q, stderr %q, exit %d", r.stdout, r.stderr, r.code)
	}
}

// TestExitCodes documents what Wine passes on: the low 8 bits of the 32-bit Windows exit
// code, except that a non-zero code whose low byte is 0 becomes 1.
func TestExitCodes(t *testing.T) {
	p, fx := setup(t)
	for _, tc := range []struct {
		arg  string
		want int
	}{
		{"0", 0}, {"1", 1}, {"7", 7}, {"255", 255},
		{"256", 1}, {"512", 1}, {"300", 44}, {"1000", 232}, {"-1", 255}, {"0xC0000005", 5},
	} {
		if r := run(t, p, p.DriveC(), nil, nil, fx[pefixtures.Exit], tc.arg); r.code != tc.want {
			t.Errorf("exit.exe %s: exit %d (stderr %q), want %d", tc.arg, r.code, r.stderr, tc.want)
		}
	}
}

// TestCtrlC: SIGINT to the program's process group becomes CTRL_C_EVENT for its handler.
func TestCtrlC(t *testing.T) {
	p, fx := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := p.Command(ctx, fx[pefixtures.WaitCtrlC])
	cmd.Dir = p.DriveC()
	checkCtrlC(t, cmd)
}

// checkCtrlC runs cmd, whose program (waitctrlc.exe's behaviour) says "ready", then
// sends SIGINT to its process group, and checks that the program got CTRL_C_EVENT: it
// says "got ctrl-c" and exits 42.
func checkCtrlC(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stdout)
	if line, err := r.ReadString('\n'); err != nil || line != "ready\n" {
		cmd.Cancel()
		cmd.Wait()
		t.Fatalf("first line %q, %v (stderr %q)", line, err, errb.String())
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	rest, _ := r.ReadString(0)
	err = cmd.Wait()
	if rest != "got ctrl-c\n" || cmd.ProcessState.ExitCode() != 42 {
		t.Errorf("after SIGINT: %q, exit %d (%v), stderr %q; want \"got ctrl-c\\n\", 42", rest, cmd.ProcessState.ExitCode(), err, errb.String())
	}
}

func TestCwd(t *testing.T) {
	p, fx := setup(t)
	work := filepath.Join(p.DriveC(), "work", "a b ü")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	for _, tc := range []struct{ dir, want string }{
		{p.DriveC(), `C:\`},
		{work, `C:\work\a b ü`},
		{outside, `Z:` + strings.ReplaceAll(outside, "/", `\`)},
		{"/", `Z:\`},
	} {
		if w, err := p.WindowsPath(tc.dir); err != nil || w != tc.want {
			t.Errorf("WindowsPath(%q) = %q, %v; want %q", tc.dir, w, err, tc.want)
		}
		if r := run(t, p, tc.dir, nil, nil, fx[pefixtures.Pwd]); r.stdout != tc.want+"\n" || r.code != 0 {
			t.Errorf("pwd.exe in %s = %q, exit %d (stderr %q); want %q", tc.dir, r.stdout, r.code, r.stderr, tc.want)
		}
	}
}

// TestEnv documents what crosses into the Windows environment: variables pass (UTF-8
// values too, names case-insensitively), PATH is replaced by the Windows PATH, HOME and PWD
// are dropped, TEMP points into C:\users, Wine's own variables are visible.
func TestEnv(t *testing.T) {
	p, fx := setup(t)
	env := []string{"LAB_FOO=bär baz", "HOME=/root", "PWD=/somewhere"}
	if r := run(t, p, p.DriveC(), nil, env, fx[pefixtures.Getenv], "LAB_FOO"); r.stdout != "bär baz\n" || r.code != 0 {
		t.Errorf("getenv LAB_FOO = %q, %d", r.stdout, r.code)
	}
	if r := run(t, p, p.DriveC(), nil, env, fx[pefixtures.Getenv], "lab_foo"); r.stdout != "bär baz\n" || r.code != 0 {
		t.Errorf("getenv lab_foo (names are case-insensitive on Windows) = %q, %d", r.stdout, r.code)
	}
	if r := run(t, p, p.DriveC(), nil, env, fx[pefixtures.Getenv], "PATH"); !strings.HasPrefix(strings.ToLower(r.stdout), `c:\windows\system32`) {
		t.Errorf("PATH on the Windows side = %q, want Wine's C:\\windows\\system32;...", r.stdout)
	}
	for _, name := range []string{"HOME", "PWD"} {
		if r := run(t, p, p.DriveC(), nil, env, fx[pefixtures.Getenv], name); r.code != 1 {
			t.Errorf("getenv %s = %q, exit %d; Wine 8 drops it (exit 1 expected)", name, r.stdout, r.code)
		}
	}
	if r := run(t, p, p.DriveC(), nil, env, fx[pefixtures.Getenv], "TEMP"); !strings.HasPrefix(strings.ToLower(r.stdout), `c:\users\`) {
		t.Errorf("TEMP on the Windows side = %q, want C:\\users\\USER\\Temp", r.stdout)
	}
	if r := run(t, p, p.DriveC(), nil, env, fx[pefixtures.Getenv], "WINEPREFIX"); r.stdout != p.Dir+"\n" {
		t.Errorf("WINEPREFIX on the Windows side = %q, want %q (Wine's own variables are visible)", r.stdout, p.Dir)
	}
	if r := run(t, p, p.DriveC(), nil, env, fx[pefixtures.Getenv], "NO_SUCH_VARIABLE_X"); r.code != 1 || r.stdout != "" {
		t.Errorf("getenv of an unset variable = %q, %d", r.stdout, r.code)
	}
}

// BenchmarkLaunch: a warm launch of a trivial PE program (echoargs.exe with no arguments)
// through wine directly, beside the same through Debian's wrapper and /bin/true. Reports the
// median per launch (run with -benchtime=20x for the median of 20).
func BenchmarkLaunch(b *testing.B) {
	p, fx := setup(b)
	median := func(b *testing.B, f func()) {
		d := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			t := time.Now()
			f()
			d = append(d, time.Since(t))
		}
		slices.Sort(d)
		b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, "median-ms")
	}
	b.Run("native-true", func(b *testing.B) {
		median(b, func() {
			if err := exec.Command("/bin/true").Run(); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("wine-echoargs", func(b *testing.B) {
		median(b, func() { run(b, p, p.DriveC(), nil, nil, fx[pefixtures.EchoArgs]) })
	})
	if _, err := os.Stat("/usr/lib/wine/wine64"); err == nil {
		q := *p
		q.Loader = "/usr/lib/wine/wine64"
		b.Run("wine64-echoargs", func(b *testing.B) {
			median(b, func() { run(b, &q, q.DriveC(), nil, nil, fx[pefixtures.EchoArgs]) })
		})
	}
}

// TestSignalsWithoutHandler documents Wine's answer to signals for a program with no console
// control handler (cat.exe blocked on stdin): SIGINT exits with status 0 (Windows would give
// 0xC000013A), SIGTERM kills the process by the signal with no Windows-side notification.
func TestSignalsWithoutHandler(t *testing.T) {
	p, fx := setup(t)
	for _, tc := range []struct {
		sig      syscall.Signal
		wantCode int
		wantSig  syscall.Signal
	}{
		{syscall.SIGINT, 0, 0},
		{syscall.SIGTERM, -1, syscall.SIGTERM},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := p.Command(ctx, fx[pefixtures.Cat])
		cmd.Dir = p.DriveC()
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait until the program runs (echoes a line) before signalling.
		br := bufio.NewReader(stdout)
		stdin.Write([]byte("up\n"))
		if line, err := br.ReadString('\n'); line != "up\n" {
			t.Fatalf("cat.exe echoed %q, %v", line, err)
		}
		if err := syscall.Kill(-cmd.Process.Pid, tc.sig); err != nil {
			t.Fatal(err)
		}
		br.ReadString(0)
		cmd.Wait()
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		gotSig := syscall.Signal(0)
		if ws.Signaled() {
			gotSig = ws.Signal()
		}
		if cmd.ProcessState.ExitCode() != tc.wantCode || gotSig != tc.wantSig {
			t.Errorf("%v to cat.exe: exit %d, signal %v; want exit %d, signal %v", tc.sig, cmd.ProcessState.ExitCode(), gotSig, tc.wantCode, tc.wantSig)
		}
		stdin.Close()
		cancel()
	}
}
