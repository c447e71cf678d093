package pefixtures_test

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lab/host"
	"lab/internal/labtest"
	"lab/pefixtures"
	"lab/wineprefix"
)

// withPrograms returns the shared prefix after an Ensure that installs lab's system programs
// (an existing prefix: the path `lab up` takes on every start).
func withPrograms(t *testing.T) (*wineprefix.Prefix, map[string]string) {
	t.Helper()
	p, fx := setup(t)
	progs := map[string]string{}
	for _, n := range pefixtures.SystemPrograms {
		progs[n] = fx[n]
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p2, err := wineprefix.Ensure(ctx, wineprefix.Options{Dir: p.Dir, Programs: progs})
	if err == nil {
		err = p2.Configure(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	return p2, fx
}

// TestWSLDriveLayout: the paths WSL tools hard-code resolve, for Linux (the guest's view of
// drive_c) and for Windows programs, while Wine keeps its own directories.
func TestWSLDriveLayout(t *testing.T) {
	p, _ := withPrograms(t)
	c := p.DriveC()
	for _, rel := range []string{"Windows/System32/cmd.exe", "Windows/System32/reg.exe", "Windows/explorer.exe",
		"Users/Public", "Program Files", "windows/system32/cmd.exe", "Windows/System32/clip.exe"} {
		if _, err := os.Stat(filepath.Join(c, rel)); err != nil {
			t.Errorf("/mnt/c/%s: %v", rel, err)
		}
	}
	// By the WSL-cased path, as a guest's relay request resolves it.
	r := run(t, p, c, nil, nil, filepath.Join(c, "Windows", "System32", "cmd.exe"), "/c", "ver")
	if !strings.Contains(r.stdout, "Microsoft Windows") || r.code != 0 {
		t.Errorf("Windows/System32/cmd.exe /c ver = %q, %q, exit %d", r.stdout, r.stderr, r.code)
	}
	r = run(t, p, c, nil, nil, "cmd.exe", "/c", `cd /d C:\Windows\System32 && cd && dir /b C:\`)
	// Wine lists the aliases beside its own directories (measured; see DESIGN.md), in the
	// directory's order, with whatever other tests put in C:\.
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\r\n"), "\r\n")
	got := map[string]bool{}
	for _, l := range lines[1:] {
		got[l] = true
	}
	if lines[0] != `C:\Windows\System32` || r.code != 0 {
		t.Errorf("cd C:\\Windows\\System32: %q (stderr %q, exit %d)", r.stdout, r.stderr, r.code)
	}
	for _, n := range []string{"Program Files", "ProgramData", "users", "Users", "windows", "Windows"} {
		if !got[n] {
			t.Errorf("dir /b C:\\ lacks %q: %q", n, lines[1:])
		}
	}
}

// TestWindowsCommands: the Windows commands WSL users and tools type most, under Wine.
func TestWindowsCommands(t *testing.T) {
	p, _ := withPrograms(t)
	c := p.DriveC()
	host, _ := os.Hostname()
	for _, tc := range []struct {
		name       string
		stdin      []byte
		args       []string
		wantOut    string // substring of stdout
		wantErr    string // exact stderr
		wantCode   int
		caseInsens bool
	}{
		{name: "cmd ver", args: []string{"cmd.exe", "/c", "ver"}, wantOut: "Microsoft Windows"},
		{name: "cmd echo quoted", args: []string{"cmd.exe", "/c", "echo", "hello world"}, wantOut: "\"hello world\"\r\n"}, // with the quotes, as in WSL
		{name: "reg query", args: []string{"reg.exe", "query", `HKCU\Software\Wine\WineBrowser`, "/v", "Browsers"}, wantOut: filepath.Join(p.Dir, "lab-open")},
		// lab's where.exe (Wine's is a stub that prints nothing and exits 0).
		{name: "where cmd", args: []string{"where.exe", "cmd"}, wantOut: "C:\\windows\\system32\\cmd.exe\r\n"},
		{name: "where cmd.exe", args: []string{"where.exe", "cmd.exe"}, wantOut: "C:\\windows\\system32\\cmd.exe\r\n"},
		{name: "where wildcard", args: []string{"where.exe", "/F", "clip*"}, wantOut: "\"C:\\windows\\system32\\clip.exe\"\r\n"},
		{name: "where by cmd", args: []string{"cmd.exe", "/c", "where", "hostname"}, wantOut: "C:\\windows\\system32\\hostname.exe\r\n"},
		{name: "where nosuch", args: []string{"where.exe", "nosuch"}, wantCode: 1, wantErr: "INFO: Could not find files for the given pattern(s).\r\n"},
		{name: "where quiet", args: []string{"where.exe", "/Q", "cmd", "nosuch"}, wantCode: 1},
		{name: "where bad option", args: []string{"where.exe", "/X", "cmd"}, wantCode: 2, wantErr: "ERROR: Invalid argument or option - '/X'.\r\nType \"WHERE /?\" for usage.\r\n"},
		{name: "whoami", args: []string{"whoami.exe"}, wantOut: `\`},
		{name: "hostname", args: []string{"hostname.exe"}, wantOut: host, caseInsens: true},
		{name: "powershell", args: []string{"powershell.exe", "-Command", "Get-Date"}, wantCode: 1,
			wantErr: "powershell.exe: not available in lab's Windows personality (Wine has no PowerShell); use cmd.exe\n"},
		{name: "clip utf-8 bom", stdin: []byte("\xef\xbb\xbfhéllo wörld\r\n"), args: []string{"clip.exe"}},
		{name: "paste utf-8 again", args: []string{"cmd.exe", "/c", "paste.exe"}, wantOut: "héllo wörld\r\n"},
		{name: "paste utf-8", args: []string{"paste.exe"}, wantOut: "héllo wörld\r\n"},
		{name: "clip utf-16 bom", stdin: []byte("\xff\xfeh\x00\xe9\x00\x3d\xd8\x00\xde"), args: []string{"clip.exe"}},
		{name: "paste utf-16", args: []string{"paste.exe"}, wantOut: "hé😀"},
		{name: "clip ascii", stdin: []byte("plain text\n"), args: []string{"clip.exe"}},
		{name: "paste ascii", args: []string{"paste.exe"}, wantOut: "plain text\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, p, c, tc.stdin, nil, tc.args[0], tc.args[1:]...)
			out, want := r.stdout, tc.wantOut
			if tc.caseInsens {
				out, want = strings.ToLower(out), strings.ToLower(want)
			}
			if !strings.Contains(out, want) || r.stderr != tc.wantErr || r.code != tc.wantCode {
				t.Errorf("%q: stdout %q (want it to contain %q), stderr %q (want %q), exit %d (want %d)",
					tc.args, r.stdout, tc.wantOut, r.stderr, tc.wantErr, r.code, tc.wantCode)
			}
		})
	}
}

// TestOpenURL: `start URL` and `explorer.exe URL` reach lab's opener, which records them
// (headless here: no DISPLAY when the prefix was warmed).
func TestOpenURL(t *testing.T) {
	p, _ := withPrograms(t)
	log := filepath.Join(p.DriveC(), filepath.FromSlash(wineprefix.OpenedLog))
	os.Remove(log)
	urls := []string{"https://example.com/start?a=1", "https://example.com/explorer"}
	if r := run(t, p, p.DriveC(), nil, nil, "cmd.exe", "/c", "start", `""`, urls[0]); r.code != 0 {
		t.Fatalf("cmd /c start: %q, %q, exit %d", r.stdout, r.stderr, r.code)
	}
	if r := run(t, p, p.DriveC(), nil, nil, "explorer.exe", urls[1]); r.code != 0 {
		t.Fatalf("explorer.exe URL: %q, %q, exit %d", r.stdout, r.stderr, r.code)
	}
	want := strings.Join(urls, "\n") + "\n"
	// start and explorer return before winebrowser ran the opener.
	var got []byte
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got, _ = os.ReadFile(log); string(got) == want {
			return
		}
	}
	t.Errorf("%s = %q, want %q", log, got, want)
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCommandLine compares the command line a PE program gets from `wine PROGRAM ARGS...`
// with the one WSL builds, byte for byte. Where Wine differs, the test pins what Wine does.
func TestCommandLine(t *testing.T) {
	p, fx := setup(t)
	exe := fx[pefixtures.Cmdline]
	win, err := p.WindowsPath(exe)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		arg  string
		wine string // "": Wine builds what WSL builds
	}{
		{arg: "plain"},
		{arg: ""},
		{arg: "a b"},
		{arg: "tab\there"},
		{arg: `c:\dir with space\`},
		{arg: `trail\`},
		{arg: `back\slash`},
		{arg: "ünï €"},
		{arg: "日本語"},
		{arg: "%PATH%"},
		{arg: `a\"b c`},
		{arg: `q"x`, wine: `q\"x`},
		{arg: `"hello world"`},
		{arg: `a\"b`, wine: `a\\\"b`},
		{arg: "nl\nx", wine: "nl\nx"},
		{arg: "cr\rx", wine: "cr\rx"},
	} {
		r := run(t, p, p.DriveC(), nil, nil, exe, tc.arg)
		got := strings.TrimSuffix(r.stdout, "\n")
		wsl := `"` + win + `" ` + host.QuoteWindowsArg(tc.arg)
		want := wsl
		if tc.wine != "" {
			want = `"` + win + `" ` + tc.wine
		}
		if got != want || r.code != 0 {
			t.Errorf("arg %q: command line %q (exit %d), want %q", tc.arg, got, r.code, want)
		}
		if tc.wine != "" && want == wsl {
			t.Errorf("arg %q: marked as differing from WSL, but Wine builds WSL's %q", tc.arg, wsl)
		}
	}
	// labrun.exe (what the relay uses when Wine's quoting differs) gives WSL's exact line.
	launcher := filepath.Join(p.DriveC(), "windows", "system32", pefixtures.LabRun)
	if err := os.WriteFile(launcher, mustRead(t, fx[pefixtures.LabRun]), 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(launcher)
	for _, args := range [][]string{{`q"x`}, {`a\"b`, "nl\nx", "cr\rx"}, {"", "a b", `trail\`, `"hello world"`}} {
		line := `"` + win + `"`
		for _, a := range args {
			line += " " + host.QuoteWindowsArg(a)
		}
		r := run(t, p, p.DriveC(), nil, []string{"LABRUN_PROGRAM=" + win, "LABRUN_CMDLINE=" + line}, launcher)
		if got := strings.TrimSuffix(r.stdout, "\n"); got != line || r.code != 0 {
			t.Errorf("labrun %q: %q (stderr %q, exit %d), want %q", args, got, r.stderr, r.code, line)
		}
	}
	// Exit codes and the environment (without LABRUN_*) pass through the launcher.
	exitWin, _ := p.WindowsPath(fx[pefixtures.Exit])
	if r := run(t, p, p.DriveC(), nil, []string{"LABRUN_PROGRAM=" + exitWin, "LABRUN_CMDLINE=exit.exe 7"}, launcher); r.code != 7 {
		t.Errorf("labrun exit.exe 7: exit %d (stderr %q)", r.code, r.stderr)
	}
	getenvWin, _ := p.WindowsPath(fx[pefixtures.Getenv])
	if r := run(t, p, p.DriveC(), nil, []string{"LABRUN_PROGRAM=" + getenvWin, "LABRUN_CMDLINE=getenv.exe LABRUN_CMDLINE"}, launcher); r.code != 1 {
		t.Errorf("labrun getenv.exe LABRUN_CMDLINE: %q, exit %d; want it unset (exit 1)", r.stdout, r.code)
	}

	// Every argument still arrives intact through MSVCRT-style parsing (Go's os.Args).
	var args []string
	var want bytes.Buffer
	for _, a := range []string{"", `q"x`, `"hello world"`, `a\"b`, `trail\`, "tab\there"} {
		args = append(args, a)
		want.WriteString(a + "\n")
	}
	if r := run(t, p, p.DriveC(), nil, nil, fx[pefixtures.EchoArgs], args...); r.stdout != want.String() {
		t.Errorf("echoargs: %q, want %q", r.stdout, want.String())
	}
}

// TestLabRunCtrlC: Ctrl-C reaches a program started by labrun.exe, and the launcher exits
// with the program's answer (waitctrlc.exe: 42), not first.
func TestLabRunCtrlC(t *testing.T) {
	p, fx := setup(t)
	launcher := filepath.Join(p.DriveC(), "labrun-ctrlc.exe")
	if err := os.WriteFile(launcher, mustRead(t, fx[pefixtures.LabRun]), 0o755); err != nil {
		t.Fatal(err)
	}
	win, _ := p.WindowsPath(fx[pefixtures.WaitCtrlC])
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := p.Command(ctx, launcher)
	cmd.Dir = p.DriveC()
	cmd.Env = append(cmd.Env, "LABRUN_PROGRAM="+win, `LABRUN_CMDLINE=waitctrlc.exe "q\"x"`)
	checkCtrlC(t, cmd)
}

// xvfb starts an Xvfb server on a free display for the test and returns its DISPLAY value;
// it skips (or fails under LAB_REQUIRE_VM=1) without Xvfb and xclip.
func xvfb(t *testing.T) string {
	t.Helper()
	labtest.Need(t, "Xvfb", "xclip")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// -displayfd: Xvfb picks a free display and writes its number to fd 3 when it is ready.
	cmd := exec.Command("Xvfb", "-displayfd", "3", "-nolisten", "tcp", "-screen", "0", "640x480x24")
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		t.Fatalf("Xvfb did not report its display: %v", err)
	}
	return ":" + strings.TrimSpace(line)
}

// TestHostClipboard: with a desktop (DISPLAY set for the process that warms the prefix and
// runs the programs, as the hostagent has it), clip.exe's text reaches the host's X11
// clipboard, and the host's clipboard reaches paste.exe.
func TestHostClipboard(t *testing.T) {
	_, fx := setup(t)
	display := xvfb(t)
	t.Setenv("DISPLAY", display)
	progs := map[string]string{}
	for _, n := range pefixtures.SystemPrograms {
		progs[n] = fx[n]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p, err := wineprefix.Ensure(ctx, wineprefix.Options{Dir: filepath.Join(t.TempDir(), "prefix"), Programs: progs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		p.Shutdown(ctx)
	})
	if err := p.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	text := "héllo wörld 😀 from Windows\r\n"
	if r := run(t, p, p.DriveC(), []byte("\xef\xbb\xbf"+text), nil, "clip.exe"); r.code != 0 || r.stderr != "" {
		t.Fatalf("clip.exe: %q, exit %d", r.stderr, r.code)
	}
	// Wine's X11 driver writes Windows' CRLF line ends as LF on the X selection.
	want := strings.ReplaceAll(text, "\r\n", "\n")
	var got []byte
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		xc := exec.CommandContext(ctx, "xclip", "-o", "-selection", "clipboard")
		xc.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
		if got, err = xc.Output(); err == nil && string(got) == want {
			break
		}
	}
	if string(got) != want {
		t.Errorf("xclip -o -selection clipboard = %q (%v), want %q", got, err, want)
	}
	// And back: the host's clipboard is what Windows programs read.
	in := exec.CommandContext(ctx, "xclip", "-i", "-selection", "clipboard")
	in.Stdin = strings.NewReader("from the hóst")
	if err := in.Run(); err != nil {
		t.Fatal(err)
	}
	if r := run(t, p, p.DriveC(), nil, nil, "paste.exe"); r.stdout != "from the hóst" || r.code != 0 {
		t.Errorf("paste.exe after xclip -i: %q (stderr %q, exit %d), want %q", r.stdout, r.stderr, r.code, "from the hóst")
	}
}
