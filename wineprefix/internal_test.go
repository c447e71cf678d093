package wineprefix

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"lab/internal/labtest"
	"lab/internal/shell"
)

func TestWindowsPath(t *testing.T) {
	const c = "/state/lab/vm/wine/drive_c"
	for _, tc := range []struct{ in, want, err string }{
		{c, `C:\`, ""},
		{c + "/", `C:\`, ""},
		{c + "/docs/a b/ü.txt", `C:\docs\a b\ü.txt`, ""},
		{c + "/windows/system32/cmd.exe", `C:\windows\system32\cmd.exe`, ""},
		{"/state/lab/vm/wine/drive_cx/y", `Z:\state\lab\vm\wine\drive_cx\y`, ""},
		{"/home/me/share", `Z:\home\me\share`, ""},
		{"/", `Z:\`, ""},
		{c + "/../x", `Z:\state\lab\vm\wine\x`, ""},
		{"rel/x", "", "not an absolute path"},
	} {
		got, err := windowsPath(c, tc.in)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("windowsPath(%q) = %q, %v; want %q, %q", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestUnixPath(t *testing.T) {
	const c = "/p/drive_c"
	for _, tc := range []struct{ in, want, err string }{
		{`C:\`, c, ""},
		{`C:`, c, ""},
		{`c:/Users/me`, c + "/Users/me", ""},
		{`C:\windows\system32\cmd.exe`, c + "/windows/system32/cmd.exe", ""},
		{`C:\..\..\etc`, c + "/etc", ""}, // cannot climb out of the drive
		{`Z:\home\me`, "/home/me", ""},
		{`z:/`, "/", ""},
		{`D:\x`, "", "not mapped"},
		{`C:x`, "", "not an absolute Windows path"},
		{`\x`, "", "not an absolute Windows path"},
	} {
		got, err := unixPath(c, tc.in)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("unixPath(%q) = %q, %v; want %q, %q", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestEnviron(t *testing.T) {
	p := &Prefix{Dir: "/x/prefix"}
	for _, tc := range []struct {
		base       []string
		wantLCAll  bool
		wantAbsent string
	}{
		{[]string{"PATH=/bin", "LANG=C"}, true, ""},
		{[]string{"LANG=de_DE.UTF-8"}, false, ""},
		{[]string{"LC_ALL=C", "LANG=en_US.UTF-8"}, true, ""}, // LC_ALL wins over LANG
		{[]string{"LC_ALL=C.utf8"}, false, ""},
		{[]string{"WINEPREFIX=/home/me/.wine", "WINEDEBUG=+relay"}, true, "WINEPREFIX=/home/me/.wine"},
	} {
		env := p.Environ(tc.base)
		for _, want := range []string{"WINEPREFIX=/x/prefix", "WINEDEBUG=-all", "WINEDLLOVERRIDES=" + DLLOverrides} {
			if !slices.Contains(env, want) {
				t.Errorf("Environ(%q) = %q: missing %s", tc.base, env, want)
			}
		}
		if got := slices.Contains(env, "LC_ALL=C.UTF-8"); got != tc.wantLCAll {
			t.Errorf("Environ(%q) = %q: LC_ALL=C.UTF-8 set %v, want %v", tc.base, env, got, tc.wantLCAll)
		}
		if tc.wantAbsent != "" && slices.Contains(env, tc.wantAbsent) {
			t.Errorf("Environ(%q) kept %s", tc.base, tc.wantAbsent)
		}
	}
}

func TestCopyTree(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "dst")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "drive_c/windows/system32"), 0o755))
	must(os.WriteFile(filepath.Join(src, "drive_c/windows/system32/a.dll"), []byte(strings.Repeat("x", 1<<20)), 0o644))
	must(os.WriteFile(filepath.Join(src, "system.reg"), []byte("reg"), 0o600))
	must(os.WriteFile(filepath.Join(src, serverFile), []byte("wine-abcdef"), 0o400))
	must(os.MkdirAll(filepath.Join(src, "dosdevices"), 0o755))
	must(os.Symlink("../drive_c", filepath.Join(src, "dosdevices/c:")))
	must(os.Symlink("/", filepath.Join(src, "dosdevices/z:")))
	must(os.Chmod(filepath.Join(src, "dosdevices"), 0o555)) // filled before its mode is set
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	must(os.Chtimes(filepath.Join(src, "system.reg"), old, old))
	must(os.Chtimes(filepath.Join(src, "drive_c"), old, old))
	t.Cleanup(func() {
		os.Chmod(filepath.Join(src, "dosdevices"), 0o755)
		os.Chmod(filepath.Join(dst, "dosdevices"), 0o755)
	})

	must(os.Mkdir(dst, 0o755))
	must(copyTree(context.Background(), src, dst, map[string]bool{serverFile: true}))

	b, err := os.ReadFile(filepath.Join(dst, "drive_c/windows/system32/a.dll"))
	must(err)
	if len(b) != 1<<20 {
		t.Errorf("a.dll: %d bytes", len(b))
	}
	if l, err := os.Readlink(filepath.Join(dst, "dosdevices/c:")); err != nil || l != "../drive_c" {
		t.Errorf("c: link = %q, %v", l, err)
	}
	if l, err := os.Readlink(filepath.Join(dst, "dosdevices/z:")); err != nil || l != "/" {
		t.Errorf("z: link = %q, %v", l, err)
	}
	if _, err := os.Lstat(filepath.Join(dst, serverFile)); !os.IsNotExist(err) {
		t.Errorf("skipped file copied: %v", err)
	}
	for name, mode := range map[string]os.FileMode{"system.reg": 0o600, "dosdevices": 0o555 | os.ModeDir, "drive_c/windows/system32/a.dll": 0o644} {
		fi, err := os.Stat(filepath.Join(dst, name))
		must(err)
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), mode)
		}
	}
	for _, name := range []string{"system.reg", "drive_c"} {
		fi, err := os.Stat(filepath.Join(dst, name))
		must(err)
		if !fi.ModTime().Equal(old) {
			t.Errorf("%s: mtime %v, want %v", name, fi.ModTime(), old)
		}
	}
}

func TestCleanServerDir(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	prefix := filepath.Join(t.TempDir(), "prefix")
	if err := os.Mkdir(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(prefix, &st); err != nil {
		t.Fatal(err)
	}
	ours := fmt.Sprintf("server-%x-%x", st.Dev, st.Ino)
	mk := func(name string, servers ...string) string {
		d := filepath.Join(tmp, name)
		for _, s := range servers {
			if err := os.MkdirAll(filepath.Join(d, s), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	record := func(name string) {
		if err := os.WriteFile(filepath.Join(prefix, serverFile), []byte(name+"\n"), 0o400); err != nil {
			t.Fatal(err)
		}
	}
	exists := func(d string) bool { _, err := os.Stat(d); return err == nil }

	own := mk("wine-AbC123", ours)
	record("wine-AbC123")
	if err := cleanServerDir(prefix); err != nil || exists(own) {
		t.Errorf("own server dir: err %v, still there %v", err, exists(own))
	}
	os.Remove(filepath.Join(prefix, serverFile))

	shared := mk("wine-Shared", ours, "server-fe00-1")
	record("wine-Shared")
	if err := cleanServerDir(prefix); err != nil || !exists(shared) {
		t.Errorf("a directory holding another prefix's server must stay: err %v, there %v", err, exists(shared))
	}
	os.Remove(filepath.Join(prefix, serverFile))

	record("../../etc") // never follow a name that is not Wine's pattern
	if err := cleanServerDir(prefix); err != nil {
		t.Error(err)
	}
}

func TestFindNoWine(t *testing.T) {
	_, _, err := Find(Options{Wine: "/nonexistent/wine"})
	if err != ErrNoWine || !strings.Contains(err.Error(), "apt-get install --no-install-recommends wine64 wine") {
		t.Errorf("Find with a missing wine = %v, want ErrNoWine naming the apt-get command", err)
	}
	_, err = Ensure(context.Background(), Options{Dir: t.TempDir(), Wine: "/nonexistent/wine", CacheDir: t.TempDir()})
	if err != ErrNoWine {
		t.Errorf("Ensure with a missing wine = %v, want ErrNoWine", err)
	}
}

func TestEnsureRefusesForeignDir(t *testing.T) {
	if _, _, err := Find(Options{}); err != nil {
		labtest.SkipOrFail(t, "%v", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "mine.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Ensure(context.Background(), Options{Dir: dir, CacheDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "is not a Wine prefix") {
		t.Errorf("Ensure on a directory with files = %v", err)
	}
}

// FuzzUnixPath: an accepted Windows path gives a clean absolute host path that translates
// back to a Windows path naming the same host path.
func FuzzUnixPath(f *testing.F) {
	for _, s := range []string{`C:\`, `c:/x/../y`, `Z:\p\drive_c\x`, `Z:\`, `C:\a\\b\.\c`, `D:\x`, `C:`, "C:\\\x00"} {
		f.Add(s)
	}
	const c = "/p/drive_c"
	f.Fuzz(func(t *testing.T, w string) {
		u, err := unixPath(c, w)
		if err != nil {
			return
		}
		if !filepath.IsAbs(u) || filepath.Clean(u) != u {
			t.Fatalf("unixPath(%q) = %q: not clean and absolute", w, u)
		}
		back, err := windowsPath(c, u)
		if err != nil {
			t.Fatalf("windowsPath(%q): %v", u, err)
		}
		again, err := unixPath(c, back)
		if err != nil || again != u {
			t.Fatalf("%q -> %q -> %q -> %q, %v", w, u, back, again, err)
		}
	})
}

// TestOpenerScript runs lab-open as Wine's winebrowser and the relay call it: every target is
// recorded in OpenedLog; explorer mode records the Windows form, opens the host form and exits
// 1 (WSL's explorer.exe); xdg-open runs only when the warming process had a display.
func TestOpenerScript(t *testing.T) {
	dir := t.TempDir()
	driveC := filepath.Join(dir, "drive_c")
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	opened := filepath.Join(dir, "xdg-open.log")
	// A stand-in for the host's xdg-open: records its arguments and DISPLAY.
	os.WriteFile(filepath.Join(bin, "xdg-open"), []byte("#!/bin/sh\nprintf '%s|%s\\n' \"$DISPLAY\" \"$*\" >>"+shell.Quote(opened)+"\n"), 0o755)
	log := filepath.Join(driveC, filepath.FromSlash(OpenedLog))
	for _, tc := range []struct {
		name, display string
		args          []string
		code          int
		log, xdg      string
	}{
		{name: "winebrowser headless", args: []string{"https://example.org/a?b=1"}, log: "https://example.org/a?b=1\n"},
		{name: "explorer headless", args: []string{"--explorer", `C:\work dir`, driveC + "/work dir"}, code: 1, log: "C:\\work dir\n"},
		{name: "explorer url", args: []string{"--explorer", "https://example.org", "https://example.org"}, code: 1, log: "https://example.org\n"},
		{name: "winebrowser desktop", display: ":7", args: []string{"https://example.org"}, log: "https://example.org\n", xdg: ":7|https://example.org\n"},
		{name: "explorer desktop", display: ":7", args: []string{"--explorer", `Z:\tmp`, "/tmp"}, code: 1, log: "Z:\\tmp\n", xdg: ":7|/tmp\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(log)
			os.Remove(opened)
			script := filepath.Join(dir, "lab-open")
			if err := os.WriteFile(script, []byte(openerScript(driveC, tc.display, "")), 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(script, tc.args...)
			cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin"}
			out, err := cmd.CombinedOutput()
			if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != tc.code || len(out) != 0 {
				t.Errorf("lab-open %q: %v, output %q; want exit %d and no output", tc.args, err, out, tc.code)
			}
			gotLog, _ := os.ReadFile(log)
			gotXdg, _ := os.ReadFile(opened)
			if string(gotLog) != tc.log || string(gotXdg) != tc.xdg {
				t.Errorf("lab-open %q: recorded %q, xdg-open ran with %q; want %q, %q", tc.args, gotLog, gotXdg, tc.log, tc.xdg)
			}
		})
	}
	// The record is bounded: the prefix is shared and kept for good, and every run of the
	// suite opens a few URLs. Past 1000 lines the newest 500 are kept.
	t.Run("bounded", func(t *testing.T) {
		script := filepath.Join(dir, "lab-open")
		os.WriteFile(script, []byte(openerScript(driveC, "", "")), 0o755)
		os.WriteFile(log, []byte(strings.Repeat("old\n", 1000)), 0o644)
		cmd := exec.Command(script, "https://example.org/new")
		cmd.Env = []string{"PATH=/usr/bin:/bin"}
		if out, err := cmd.CombinedOutput(); err != nil || len(out) != 0 {
			t.Fatalf("lab-open: %v, output %q", err, out)
		}
		got, _ := os.ReadFile(log)
		if want := strings.Repeat("old\n", 499) + "https://example.org/new\n"; string(got) != want {
			t.Errorf("after 1001 records the log holds %d lines ending %q; want the newest 500", strings.Count(string(got), "\n"), got[max(0, len(got)-40):])
		}
	})
}

func TestLoader(t *testing.T) {
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "wine64"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	if got, err := Loader(""); err != nil || got != filepath.Join(bin, "wine64") && got != "/usr/lib/wine/wine64" {
		t.Errorf(`Loader("") with only wine64 in PATH = %q, %v`, got, err)
	}
	if got, err := Loader("/nonexistent/wine"); err != ErrNoWine {
		t.Errorf("Loader(/nonexistent/wine) = %q, %v; want ErrNoWine", got, err)
	}
	if got, err := Loader("wine64"); err != nil || got != filepath.Join(bin, "wine64") {
		t.Errorf("Loader(wine64) = %q, %v; want %s", got, err, filepath.Join(bin, "wine64"))
	}
}

// TestInUse: users hold the users' file shared; an agent that saw the last one go holds it
// exclusively, which is no user.
func TestInUse(t *testing.T) {
	for _, tc := range []struct {
		name string
		how  []int // flocks held on the users' file, each on an open of its own
		want bool
	}{
		{"nobody", nil, false},
		{"one user", []int{syscall.LOCK_SH}, true},
		{"two users", []int{syscall.LOCK_SH, syscall.LOCK_SH}, true},
		{"stopping agent", []int{syscall.LOCK_EX}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, how := range tc.how {
				f, err := os.OpenFile(filepath.Join(dir, usersLock), os.O_RDWR|os.O_CREATE, 0o644)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB); err != nil {
					t.Fatal(err)
				}
			}
			if got := InUse(dir); got != tc.want {
				t.Errorf("InUse = %v, want %v", got, tc.want)
			}
		})
	}
}
