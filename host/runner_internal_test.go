package host

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestDetectFormat(t *testing.T) {
	dir := t.TempDir()
	tests := map[string]struct {
		data string
		want Format
	}{
		"pe":     {"MZ\x90\x00rest", FormatPE},
		"elf":    {"\x7fELF\x02\x01", FormatNative},
		"script": {"#!/bin/sh\n", FormatNative},
		"short":  {"M", FormatNative},
		"empty":  {"", FormatNative},
	}
	for name, tt := range tests {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(tt.data), 0o755)
		got, err := DetectFormat(p)
		if err != nil || got != tt.want {
			t.Errorf("%s: DetectFormat = %v, %v; want %v", name, got, err, tt.want)
		}
	}
	if _, err := DetectFormat(filepath.Join(dir, "missing")); err == nil {
		t.Error("DetectFormat of a missing file succeeded")
	}
}

func TestCommandNative(t *testing.T) {
	c := &Config{}
	cmd, _, err := c.command(launch{Program: "/bin/echo", Args: []string{"./echo", "a b", ""}, Dir: "/tmp", Env: []string{"A=1"}})
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Path != "/bin/echo" || !reflect.DeepEqual(cmd.Args, []string{"./echo", "a b", ""}) || cmd.Dir != "/tmp" || !reflect.DeepEqual(cmd.Env, []string{"A=1"}) {
		t.Errorf("native command: %q %q dir %q env %q", cmd.Path, cmd.Args, cmd.Dir, cmd.Env)
	}
}

func TestCommandWine(t *testing.T) {
	dir := t.TempDir()
	c, err := Config{Token: make([]byte, 16), Wine: WineConfig{Path: "/opt/wine/bin/wine", Prefix: filepath.Join(dir, "state", "wine")}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	cmd, delay, err := c.command(launch{
		Program: "/share/app.exe", Args: []string{"app.exe", "x y", "ü€"}, Dir: "/share",
		Env:    []string{"PATH=/usr/bin", "WINEPREFIX=/home/u/.wine", "WINEDEBUG=+all", "LANG=C"},
		Format: FormatPE,
	})
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Path != "/opt/wine/bin/wine" {
		t.Errorf("path %q", cmd.Path)
	}
	if want := []string{"/opt/wine/bin/wine", "/share/app.exe", "x y", "ü€"}; !reflect.DeepEqual(cmd.Args, want) {
		t.Errorf("args %q, want %q", cmd.Args, want)
	}
	wantEnv := []string{"PATH=/usr/bin", "LANG=C",
		"WINEPREFIX=" + filepath.Join(dir, "state", "wine"), "WINEDEBUG=-all",
		"WINEDLLOVERRIDES=" + DefaultWineDLLOverrides, "LC_ALL=C.UTF-8"}
	if !reflect.DeepEqual(cmd.Env, wantEnv) {
		t.Errorf("env\n got %q\nwant %q", cmd.Env, wantEnv)
	}
	if delay != c.Wine.WaitDelay || delay <= 0 {
		t.Errorf("drain %v, want the wine WaitDelay %v", delay, c.Wine.WaitDelay)
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); err != nil {
		t.Errorf("the prefix's parent was not created: %v", err)
	}
	// A UTF-8 locale is kept as it is.
	env := wineEnv([]string{"LANG=en_US.UTF-8"}, c.Wine)
	for _, kv := range env {
		if kv == "LC_ALL=C.UTF-8" {
			t.Errorf("LC_ALL forced over a UTF-8 LANG: %q", env)
		}
	}
}

func TestWineMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := os.Stat("/usr/lib/wine/wine64"); err == nil {
		t.Skip("wine64 is installed here")
	}
	c, _ := Config{Token: make([]byte, 16), Wine: WineConfig{Prefix: "/tmp/x"}}.withDefaults()
	if _, _, err := c.command(launch{Program: "/x.exe", Args: []string{"x"}, Format: FormatPE}); err == nil {
		t.Error("wine command built without wine installed")
	}
}

// TestQuoteWindowsArg: WSL's FormatCommandLine rules (wsl-reference §1 row 8).
func TestQuoteWindowsArg(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{"", `""`},
		{"a b", `"a b"`},
		{"a\tb", "\"a\tb\""},
		{"a\nb", "\"a\nb\""},
		{"a\rb", "\"a\rb\""},
		{`q"x`, `"q\"x"`},
		{`a\"b`, `"a\\\"b"`},
		{`a\\"b`, `"a\\\\\"b"`},
		{`trail\`, `trail\`},
		{`dir with space\`, `"dir with space\\"`},
		{`back\slash`, `back\slash`},
		{`x\\ y\\`, `"x\\ y\\\\"`},
		{"ü€", "ü€"},
	} {
		if got := QuoteWindowsArg(tc.in); got != tc.want {
			t.Errorf("QuoteWindowsArg(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestCommandWineExactCmdline: an argument that Wine would quote differently from WSL goes
// through labrun.exe with the exact command line; other launches stay `wine PROGRAM ARGS`.
func TestCommandWineExactCmdline(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "wine")
	sys32 := filepath.Join(prefix, "drive_c", "windows", "system32")
	if err := os.MkdirAll(sys32, 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := Config{Token: make([]byte, 16), Wine: WineConfig{Path: "/opt/wine", Prefix: prefix}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(prefix, "drive_c", "fx", "cmdline.exe")
	build := func(args ...string) *exec.Cmd {
		cmd, _, err := c.command(launch{Program: prog, Args: append([]string{"cmdline.exe"}, args...), Dir: "/", Format: FormatPE})
		if err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	// No launcher installed: Wine's own quoting, whatever the arguments.
	if cmd := build(`q"x`); !reflect.DeepEqual(cmd.Args, []string{"/opt/wine", prog, `q"x`}) {
		t.Errorf("without labrun.exe: args %q", cmd.Args)
	}
	launcher := filepath.Join(sys32, LabRunName)
	if err := os.WriteFile(launcher, []byte("MZ"), 0o755); err != nil {
		t.Fatal(err)
	}
	if cmd := build("a b", `a\"b c`, ""); !reflect.DeepEqual(cmd.Args, []string{"/opt/wine", prog, "a b", `a\"b c`, ""}) {
		t.Errorf("Wine quotes these as WSL does, yet: args %q", cmd.Args)
	}
	cmd := build("a b", `q"x`, "nl\nx")
	if !reflect.DeepEqual(cmd.Args, []string{"/opt/wine", launcher}) {
		t.Errorf("args %q, want wine and the launcher", cmd.Args)
	}
	wantLine := `"C:\fx\cmdline.exe" "a b" "q\"x" "nl` + "\n" + `x"`
	var gotProg, gotLine string
	for _, kv := range cmd.Env {
		if v, ok := strings.CutPrefix(kv, "LABRUN_PROGRAM="); ok {
			gotProg = v
		}
		if v, ok := strings.CutPrefix(kv, "LABRUN_CMDLINE="); ok {
			gotLine = v
		}
	}
	if gotProg != `C:\fx\cmdline.exe` || gotLine != wantLine {
		t.Errorf("LABRUN_PROGRAM %q, LABRUN_CMDLINE %q; want %q, %q", gotProg, gotLine, `C:\fx\cmdline.exe`, wantLine)
	}
}

// TestCommandExplorer: the guest's `explorer.exe TARGET` runs the prefix's opener with the
// target's Windows form (recorded) and host form (opened); anything else stays with Wine.
func TestCommandExplorer(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "wine")
	driveC := filepath.Join(prefix, "drive_c")
	sys32 := filepath.Join(driveC, "windows", "system32")
	if err := os.MkdirAll(sys32, 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := Config{Token: make([]byte, 16), Wine: WineConfig{Path: "/opt/wine", Prefix: prefix}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	opener := filepath.Join(prefix, "lab-open")
	explorer := filepath.Join(driveC, "windows", "explorer.exe")
	work := filepath.Join(driveC, "work")
	build := func(prog string, args ...string) []string {
		cmd, _, err := c.command(launch{Program: prog, Args: append([]string{"explorer.exe"}, args...), Dir: work, Format: FormatPE})
		if err != nil {
			t.Fatal(err)
		}
		return cmd.Args
	}
	if got := build(explorer, "."); !reflect.DeepEqual(got, []string{"/opt/wine", explorer, "."}) {
		t.Errorf("without lab-open: %q, want Wine", got)
	}
	if err := os.WriteFile(opener, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		prog string
		args []string
		want []string
	}{
		{explorer, []string{"."}, []string{opener, "--explorer", `C:\work`, work}},
		{filepath.Join(sys32, "explorer.exe"), []string{`sub\dir`}, []string{opener, "--explorer", `C:\work\sub\dir`, work + "/sub/dir"}},
		{explorer, []string{".."}, []string{opener, "--explorer", `C:\`, driveC}},
		{explorer, []string{`C:\Users\Public`}, []string{opener, "--explorer", `C:\Users\Public`, driveC + "/Users/Public"}},
		{explorer, []string{`z:\tmp`}, []string{opener, "--explorer", `Z:\tmp`, "/tmp"}},
		{explorer, []string{"https://example.org/?q=a b"}, []string{opener, "--explorer", "https://example.org/?q=a b", "https://example.org/?q=a b"}},
		{explorer, []string{"mailto:me@example.org"}, []string{opener, "--explorer", "mailto:me@example.org", "mailto:me@example.org"}},
		// Left to Wine: switches, several arguments, other drives, UNC paths, no argument,
		// an explorer.exe outside the prefix's Windows directories.
		{explorer, []string{`/select,C:\x`}, []string{"/opt/wine", explorer, `/select,C:\x`}},
		{explorer, []string{"a", "b"}, []string{"/opt/wine", explorer, "a", "b"}},
		{explorer, []string{`D:\x`}, []string{"/opt/wine", explorer, `D:\x`}},
		{explorer, []string{`\\server\share`}, []string{"/opt/wine", explorer, `\\server\share`}},
		{explorer, nil, []string{"/opt/wine", explorer}},
		{filepath.Join(driveC, "fx", "explorer.exe"), []string{"."}, []string{"/opt/wine", filepath.Join(driveC, "fx", "explorer.exe"), "."}},
	} {
		if got := build(tc.prog, tc.args...); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s %q: %q, want %q", tc.prog, tc.args, got, tc.want)
		}
	}
}

// Debian's /usr/bin/wine is a shell script choosing a loader: the relay execs the loader it
// would choose (with the WINELOADER it would set), one shell start less per PE launch; any
// other loader is used as found.
func TestDirectLoader(t *testing.T) {
	dir := t.TempDir()
	wine32, wine64 := filepath.Join(dir, "wine"), filepath.Join(dir, "wine64")
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// The shape of wine's debian/scripts/wine (wine 8.0~repack-4), with the test's loaders.
	debian := script("wrapper", "#!/bin/sh -e\n\nwine32="+wine32+"\nwine64="+wine64+"\n\nif test -x $wine32; then\n    wine=$wine32\nelif test -x $wine64; then\n    wine=$wine64\n    if test -z \"$WINELOADER\"; then\n        export WINELOADER=$wine64\n    fi\nfi\n\nexec $wine \"$@\"\n")
	other := script("other", "#!/bin/sh\nexec /opt/wine/bin/wine \"$@\"\n")
	elf := script("elf", "\x7fELF")

	check := func(what, loader, wantPath string, wantEnv []string) {
		t.Helper()
		p, env := directLoader(loader, wine32, wine64)
		if p != wantPath || !reflect.DeepEqual(env, wantEnv) {
			t.Errorf("%s: directLoader = %q %q, want %q %q", what, p, env, wantPath, wantEnv)
		}
	}
	check("no loader installed yet", debian, debian, nil)
	script("wine64", "\x7fELF")
	check("wine64 only", debian, wine64, []string{"WINELOADER=" + wine64})
	check("another wrapper", other, other, nil)
	check("a binary", elf, elf, nil)
	check("missing", filepath.Join(dir, "none"), filepath.Join(dir, "none"), nil)
	script("wine", "\x7fELF")
	check("wine32 installed", debian, wine32, nil)
}

// On a Debian host with wine64 (this project's CI), a PE launch execs the loader itself.
func TestCommandWineDebianLoader(t *testing.T) {
	const wine64 = "/usr/lib/wine/wine64"
	_, err32 := os.Stat("/usr/lib/wine/wine")
	if p, err := exec.LookPath("wine"); err != nil || p != "/usr/bin/wine" || err32 == nil {
		t.Skip("not Debian's wine wrapper with wine64 only")
	}
	if _, err := os.Stat(wine64); err != nil {
		t.Skip("no " + wine64)
	}
	if b, err := os.ReadFile("/usr/bin/wine"); err != nil || !strings.HasPrefix(string(b), "#!") {
		t.Skip("/usr/bin/wine is not a script here")
	}
	// Found in PATH, and configured as lab's machines do (the loader wineprefix.Find found).
	for _, path := range []string{"", "/usr/bin/wine"} {
		c, err := Config{Token: make([]byte, 16), Wine: WineConfig{Path: path, Prefix: filepath.Join(t.TempDir(), "wine")}}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		cmd, _, err := c.command(launch{Program: "/share/app.exe", Args: []string{"app.exe"}, Dir: "/share", Format: FormatPE})
		if err != nil {
			t.Fatal(err)
		}
		if cmd.Path != wine64 || cmd.Args[0] != wine64 || !slices.Contains(cmd.Env, "WINELOADER="+wine64) {
			t.Errorf("Wine.Path %q: PE launch runs %q %q with env %q, want %s and WINELOADER", path, cmd.Path, cmd.Args, cmd.Env, wine64)
		}
		// Debian ships no preloader: the loader's exec of itself again is skipped.
		if _, err := os.Stat("/usr/lib/wine/wine64-preloader"); errors.Is(err, fs.ErrNotExist) && !slices.Contains(cmd.Env, "WINELOADERNOEXEC=1") {
			t.Errorf("Wine.Path %q: env %q lacks WINELOADERNOEXEC=1 (no preloader here)", path, cmd.Env)
		}
	}
}

// Wine's loader execs itself again through its preloader, or without one (Debian) just
// again: a launch may skip that second exec (WINELOADERNOEXEC=1 set up front) only for a
// loader binary with no preloader beside its real file.
func TestNoPreloader(t *testing.T) {
	dir := t.TempDir()
	write := func(path, body string) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}
	link := func(target, path string) string {
		t.Helper()
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
		return path
	}
	bare := write(filepath.Join(dir, "bare", "wine64"), "\x7fELF\x02\x01")
	with64 := write(filepath.Join(dir, "with64", "wine64"), "\x7fELF\x02\x01")
	write(filepath.Join(dir, "with64", "wine64-preloader"), "\x7fELF")
	with32 := write(filepath.Join(dir, "with32", "wine"), "\x7fELF\x01\x01")
	write(filepath.Join(dir, "with32", "wine-preloader"), "\x7fELF")
	script := write(filepath.Join(dir, "script", "wine"), "#!/bin/sh\nexec /usr/lib/wine/wine64 \"$@\"\n")
	short := write(filepath.Join(dir, "short", "wine"), "\x7f")
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	// A preloader beside the link, not beside the loader: Wine looks beside the real file.
	write(filepath.Join(dir, "bin", "wine64-preloader"), "\x7fELF")
	toBare := link(bare, filepath.Join(dir, "bin", "wine64"))
	toWith := link(with64, filepath.Join(dir, "bin", "wine"))
	for _, tc := range []struct {
		what, loader string
		want         bool
	}{
		{"binary, no preloader", bare, true},
		{"wine64-preloader beside it", with64, false},
		{"wine-preloader beside it", with32, false},
		{"a script", script, false},
		{"too short for a binary", short, false},
		{"missing", filepath.Join(dir, "none"), false},
		{"link to a binary with no preloader", toBare, true},
		{"link to a binary with a preloader", toWith, false},
	} {
		if got := noPreloader(tc.loader); got != tc.want {
			t.Errorf("%s: noPreloader(%s) = %v, want %v", tc.what, tc.loader, got, tc.want)
		}
	}

	// In the command: set for such a loader, kept as given when the caller set it.
	c, err := Config{Token: make([]byte, 16), Wine: WineConfig{Path: bare, Prefix: filepath.Join(dir, "prefix")}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	l := launch{Program: "/share/app.exe", Args: []string{"app.exe"}, Dir: "/share", Env: []string{"PATH=/usr/bin"}, Format: FormatPE}
	cmd, _, err := c.command(l)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cmd.Env, "WINELOADERNOEXEC=1") {
		t.Errorf("loader without a preloader: env %q lacks WINELOADERNOEXEC=1", cmd.Env)
	}
	l.Env = []string{"PATH=/usr/bin", "WINELOADERNOEXEC=x"}
	if cmd, _, err = c.command(l); err != nil {
		t.Fatal(err)
	}
	if n := len(slices.DeleteFunc(slices.Clone(cmd.Env), func(kv string) bool { return !strings.HasPrefix(kv, "WINELOADERNOEXEC=") })); n != 1 || !slices.Contains(cmd.Env, "WINELOADERNOEXEC=x") {
		t.Errorf("caller's WINELOADERNOEXEC: env %q, want it once, as given", cmd.Env)
	}
	c.Wine.Path = with64
	l.Env = []string{"PATH=/usr/bin"}
	if cmd, _, err = c.command(l); err != nil {
		t.Fatal(err)
	}
	for _, kv := range cmd.Env {
		if strings.HasPrefix(kv, "WINELOADERNOEXEC=") {
			t.Errorf("loader with a preloader: env has %q", kv)
		}
	}
}
