package wineprefix_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lab/internal/xdg"
	"lab/wineprefix"
	"lab/wineprefix/winetest"
)

var shared winetest.Shared

func TestMain(m *testing.M) { shared.Main(m) }

// run runs a PE program in p (winetest.Run) and returns stdout, stderr and the exit code.
func run(t testing.TB, p *wineprefix.Prefix, dir, stdin, program string, args ...string) (string, string, int) {
	t.Helper()
	return winetest.Run(t, p, dir, strings.NewReader(stdin), nil, program, args...)
}

func TestCmdEcho(t *testing.T) {
	p := shared.Get(t)
	out, errs, code := run(t, p, p.DriveC(), "", "cmd.exe", "/c", "echo", "hi")
	if out != "hi\r\n" || code != 0 {
		t.Errorf("cmd.exe /c echo hi = %q (stderr %q), exit %d; want \"hi\\r\\n\", exit 0", out, errs, code)
	}
	// The same through the file WSL users see as /mnt/c/windows/system32/cmd.exe.
	out, _, code = run(t, p, "/", "", filepath.Join(p.DriveC(), "windows/system32/cmd.exe"), "/c", "echo", "hi")
	if out != "hi\r\n" || code != 0 {
		t.Errorf("drive_c/windows/system32/cmd.exe /c echo hi = %q, exit %d", out, code)
	}
}

func TestCmdExit(t *testing.T) {
	p := shared.Get(t)
	// Wine passes the low 8 bits of the Windows exit code; a non-zero code whose low byte is
	// 0 becomes 1.
	for _, tc := range []struct {
		code string
		want int
	}{{"0", 0}, {"3", 3}, {"255", 255}, {"300", 44}, {"256", 1}} {
		_, errs, code := run(t, p, p.DriveC(), "", "cmd.exe", "/c", "exit", tc.code)
		if code != tc.want {
			t.Errorf("cmd.exe /c exit %s = %d (stderr %q), want %d", tc.code, code, errs, tc.want)
		}
	}
}

func TestEnsureExisting(t *testing.T) {
	p := shared.Get(t)
	start := time.Now()
	q, err := wineprefix.Ensure(context.Background(), wineprefix.Options{Dir: p.Dir})
	if err != nil {
		t.Fatal(err)
	}
	if q.Dir != p.Dir || q.DriveC() != filepath.Join(p.Dir, "drive_c") {
		t.Errorf("Ensure on the existing prefix = %+v, want %+v", q, p)
	}
	t.Logf("first Ensure (template from cache, copy) %v; Ensure of an existing prefix %v", shared.Copied, time.Since(start))
	for _, f := range []string{"system.reg", "drive_c/windows/system32/cmd.exe", "dosdevices/c:"} {
		if _, err := os.Lstat(filepath.Join(p.Dir, f)); err != nil {
			t.Error(err)
		}
	}
}

// TestLifecycle copies, warms, runs and shuts down a prefix of its own, and checks that no
// Wine process of it and no server directory survive Shutdown.
func TestLifecycle(t *testing.T) {
	winetest.NeedWine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "my prefix") // a space, as in real home directories
	start := time.Now()
	p, err := wineprefix.Ensure(ctx, wineprefix.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	copied := time.Since(start)
	start = time.Now()
	if err := p.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	warmed := time.Since(start)
	if n := prefixProcesses(t, p.Dir); n == 0 {
		t.Errorf("after Warm no Wine process runs with WINEPREFIX=%s", p.Dir)
	}
	if out, _, code := run(t, p, p.DriveC(), "", "cmd.exe", "/c", "echo", "hi"); out != "hi\r\n" || code != 0 {
		t.Errorf("cmd.exe /c echo hi = %q, %d", out, code)
	}
	b, err := os.ReadFile(filepath.Join(p.Dir, "wineserver"))
	serverDir := ""
	if err == nil {
		serverDir = filepath.Join(os.TempDir(), strings.TrimSpace(string(b)))
	}
	start = time.Now()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("Ensure (copy) %v, Warm %v, Shutdown %v", copied, warmed, time.Since(start))
	if n := prefixProcesses(t, p.Dir); n != 0 {
		t.Errorf("after Shutdown %d Wine processes of the prefix remain", n)
	}
	if serverDir != "" {
		if _, err := os.Stat(serverDir); !os.IsNotExist(err) {
			t.Errorf("server directory %s remains after Shutdown (%v)", serverDir, err)
		}
	}
	if err := p.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	if err := p.Remove(ctx); err != nil {
		t.Fatal(err)
	}
}

// prefixProcesses counts live processes whose environment names WINEPREFIX=dir.
func prefixProcesses(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("\x00WINEPREFIX=" + dir + "\x00")
	n := 0
	for _, e := range ents {
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && len(stat) > i+2 && stat[i+2] == 'Z' {
			continue // a zombie is dead, only not yet reaped by its parent
		}
		if bytes.Contains(append([]byte{0}, env...), want) {
			n++
		}
	}
	return n
}

// BenchmarkLaunch: a warm `cmd.exe /c exit 0` through wine directly, beside /bin/true.
func BenchmarkLaunch(b *testing.B) {
	p := shared.Get(b)
	b.Run("native-true", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if err := exec.Command("/bin/true").Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("wine-cmd-exit", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, _, code := run(b, p, p.DriveC(), "", "cmd.exe", "/c", "exit", "0"); code != 0 {
				b.Fatal(code)
			}
		}
	})
}

// BenchmarkCopy: copying the template (what Ensure does per lab home) beside `cp -a`.
func BenchmarkCopy(b *testing.B) {
	winetest.NeedWine(b)
	ctx := context.Background()
	cache, err := xdg.Dir(xdg.Cache)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := filepath.Join(cache, "wine-template")
	if _, err := wineprefix.Ensure(ctx, wineprefix.Options{Dir: filepath.Join(b.TempDir(), "p")}); err != nil {
		b.Fatal(err)
	}
	b.Run("cp-a", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			d := filepath.Join(b.TempDir(), "p")
			if out, err := exec.Command("cp", "-a", tmpl, d).CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
			os.RemoveAll(d)
		}
	})
	b.Run("ensure", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			d := filepath.Join(b.TempDir(), "p")
			if _, err := wineprefix.Ensure(ctx, wineprefix.Options{Dir: d}); err != nil {
				b.Fatal(err)
			}
			os.RemoveAll(d)
		}
	})
}

// BenchmarkTemplate creates a template from scratch (wineboot -i) in a fresh cache dir.
func BenchmarkTemplate(b *testing.B) {
	winetest.NeedWine(b)
	for i := 0; i < b.N; i++ {
		cache := b.TempDir()
		if _, err := wineprefix.Ensure(context.Background(), wineprefix.Options{Dir: filepath.Join(cache, "p"), CacheDir: cache}); err != nil {
			b.Fatal(err)
		}
		os.RemoveAll(cache)
	}
}
