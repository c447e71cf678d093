package host

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"lab/wineprefix"
	"lab/wire"
)

// Format is an executable format the relay knows a runner for.
type Format int

const (
	FormatNative Format = iota // ELF, #! scripts, anything the host kernel runs itself
	FormatPE                   // Windows PE (`MZ`): run with Wine
)

func (f Format) String() string {
	switch f {
	case FormatPE:
		return "pe"
	case FormatInterp:
		return "interpreter"
	default:
		return "native"
	}
}

// DetectFormat reads the first bytes of a host file to choose its runner.
func DetectFormat(path string) (Format, error) {
	f, err := os.Open(path)
	if err != nil {
		return FormatNative, fmt.Errorf("host: %w", err)
	}
	defer f.Close()
	var magic [2]byte
	n, err := io.ReadFull(f, magic[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return FormatNative, fmt.Errorf("host: %w", err)
	}
	if n == 2 && bytes.Equal(magic[:], []byte("MZ")) {
		return FormatPE, nil
	}
	return FormatNative, nil
}

// detectFormatOf is DetectFormat for an open (possibly O_PATH) file: it reads the very file
// the descriptor names, through /proc/self/fd, whatever its path names now.
func detectFormatOf(f *os.File) (Format, error) {
	return DetectFormat(fdPath(int(f.Fd())))
}

// launch is a fully authorised request, in host terms.
type launch struct {
	File    *os.File // the checked share file, open O_PATH (nil for an exposed command); run() closes it
	Program string   // resolved host path of the program
	Args    []string // argv: argv[0] as the guest gave it, or the exposed name (exposedArgv)
	Dir     string   // host working directory
	Env     []string // host environment
	Format  Format
	Interp  []string // FormatInterp: the interpreter's argv (Config.Formats)
	queued  bool     // the relay's Hello went out while the launch waited for a slot
}

// hello is the relay's Hello to send with the LaunchResult: none when it went out
// already, before the launch waited for a session slot.
func (l launch) hello() []wire.Message {
	if l.queued {
		return nil
	}
	return []wire.Message{wire.NewHello(nil)}
}

// command builds the exec.Cmd for a launch (without stdio and process attributes) and
// returns how long to keep reading output after the program exited.
func (c *Config) command(l launch) (*exec.Cmd, time.Duration, error) {
	switch l.Format {
	case FormatPE:
		return c.wineCommand(l)
	case FormatInterp:
		return c.interpCommand(l)
	default:
		cmd := &exec.Cmd{Path: l.Program, Args: l.Args, Dir: l.Dir, Env: l.Env}
		if len(cmd.Args) == 0 {
			cmd.Args = []string{l.Program}
		}
		if l.File != nil {
			// Exec the checked file itself, not its path: the child gets the descriptor as
			// fd 3 and execs /proc/self/fd/3 (execveat(fd, "", AT_EMPTY_PATH), which os/exec
			// cannot do). fd 3 stays open in the program: a `#!` script's interpreter opens
			// the script by that name (the kernel refuses a script whose descriptor is
			// close-on-exec), and a script's $0 is /proc/self/fd/3.
			cmd.Path = fdPath(3)
			cmd.ExtraFiles = []*os.File{l.File}
		}
		return cmd, c.OutputDrain, nil
	}
}

// checkSame verifies that path still names the file f: Wine opens the program by path (it
// needs the real directory for the DLL search and GetModuleFileName), so the last check before
// the start is that path and descriptor are still the same file (device and inode).
func checkSame(f *os.File, path string) error {
	var a, b unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &a); err != nil {
		return fmt.Errorf("host: %s: %w", path, err)
	}
	if err := unix.Stat(path, &b); err != nil || a.Dev != b.Dev || a.Ino != b.Ino {
		return fmt.Errorf("host: %s: %w", path, errChanged)
	}
	return nil
}

// wineLoader finds the wine loader, and the variables to run it with besides wineEnv's.
// Debian's wrapper script is skipped for the loader it would run, also when configured
// (lab's machines configure the loader wineprefix.Find found: /usr/bin/wine on Debian).
func (c *Config) wineLoader() (string, []string, error) {
	if c.Wine.Path != "" {
		p, env := WineExec(c.Wine.Path)
		return p, env, nil // as configured; exec says what is wrong with it
	}
	if p, err := wineprefix.Loader(""); err == nil {
		p, env := WineExec(p)
		return p, env, nil
	}
	return "", nil, errors.New("host: cannot run a Windows (PE) program: wine is not installed on the host (apt-get install --no-install-recommends wine64 wine)")
}

// WineExec is what the relay execs for a PE launch given the wine loader (a path): the
// loader binary, skipping Debian's wrapper script (directLoader), and the variables to set
// besides the prefix's (WINELOADER for that loader, WINELOADERNOEXEC when it has no
// preloader: noPreloader). lab bench times Wine started this way beside `wine`.
func WineExec(loader string) (string, []string) {
	p, env := directLoader(loader, debianWine32, debianWine64)
	if noPreloader(p) {
		env = append(env, wineNoExec)
	}
	return p, env
}

// The loaders Debian's wine wrapper chooses between.
const (
	debianWine32 = "/usr/lib/wine/wine"
	debianWine64 = "/usr/lib/wine/wine64"
)

// directLoader: when loader is Debian's wrapper (/usr/bin/wine, a /bin/sh script that picks
// wine32 if it is installed, else wine64 with WINELOADER set to it, and execs it), the loader
// binary it would exec and the variable it would set, so that a launch does not start a
// shell first (its WINEDEBUG default does not matter: wineEnv sets WINEDEBUG). Any other
// loader, and a wrapper that does not read as Debian's, is returned as is.
func directLoader(loader, wine32, wine64 string) (string, []string) {
	f, err := os.Open(loader)
	if err != nil {
		return loader, nil
	}
	defer f.Close()
	head := make([]byte, 4096)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	if !bytes.HasPrefix(head, []byte("#!")) || !bytes.Contains(head, []byte("wine32="+wine32+"\n")) ||
		!bytes.Contains(head, []byte("wine64="+wine64+"\n")) || !bytes.Contains(head, []byte(`exec $wine "$@"`)) {
		return loader, nil
	}
	switch {
	case isExecutable(wine32):
		return wine32, nil
	case isExecutable(wine64):
		return wine64, []string{"WINELOADER=" + wine64}
	}
	return loader, nil
}

// wineNoExec is what Wine's loader sets before it execs itself through its preloader.
const wineNoExec = "WINELOADERNOEXEC=1"

// noPreloader reports whether loader is a Wine loader binary with no preloader beside it,
// so that a PE launch may start it with wineNoExec already set. Wine's loader (ntdll's
// __wine_main) first execs DIR/wine64-preloader (or wine-preloader) with
// WINELOADERNOEXEC=1 added to its environment; when that file is missing (Debian ships
// none) it execs the loader itself again with the same argv, and only that second process
// runs the program: a whole exec and ntdll.so load more per launch (6-27 ms of wall time
// on the 2-core lab host under load, strace -ttt). With the variable already set the first
// process is that second one: same argv, same environment. Never where a preloader exists
// (it reserves the address space Windows programs expect, and must run) nor for a script
// (it would pass the variable on to a loader not checked here).
func noPreloader(loader string) bool {
	real, err := filepath.EvalSymlinks(loader)
	if err != nil {
		return false
	}
	f, err := os.Open(real)
	if err != nil {
		return false
	}
	var magic [4]byte
	_, err = io.ReadFull(f, magic[:])
	f.Close()
	if err != nil || string(magic[:]) != "\x7fELF" {
		return false
	}
	// Wine picks the name by its loader's: both are absent when neither can be run.
	dir := filepath.Dir(real)
	for _, pre := range []string{"wine-preloader", "wine64-preloader"} {
		if _, err := os.Lstat(filepath.Join(dir, pre)); !errors.Is(err, fs.ErrNotExist) {
			return false
		}
	}
	return true
}

func isExecutable(name string) bool {
	fi, err := os.Stat(name)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// wineCommand runs a PE file as `wine PROGRAM ARGS...` in the lab's own prefix.
//
// Notes on what Wine does to the interop semantics (see docs/DESIGN.md):
//   - exit codes are 8 bits, and a non-zero code whose low byte is 0 becomes 1;
//   - SIGINT becomes CTRL_C_EVENT: a program without a handler exits with status 0;
//   - the program sees argv[0] as a Z:\ path, not the guest's argv[0];
//   - Wine replaces PATH and drops HOME and PWD in the Windows environment;
//   - on a cold prefix, Wine's services inherit the first program's stdout/stderr, hence the
//     bounded output drain (WineConfig.WaitDelay).
func (c *Config) wineCommand(l launch) (*exec.Cmd, time.Duration, error) {
	loader, loaderEnv, err := c.wineLoader()
	if err != nil {
		return nil, 0, err
	}
	if err := os.MkdirAll(filepath.Dir(c.Wine.Prefix), 0o755); err != nil {
		return nil, 0, fmt.Errorf("host: wine prefix: %w", err)
	}
	if l.File != nil {
		if err := checkSame(l.File, l.Program); err != nil {
			return nil, 0, err
		}
	}
	var rest []string
	if len(l.Args) > 1 {
		rest = l.Args[1:]
	}
	if cmd := c.explorerCommand(l, rest); cmd != nil {
		return cmd, c.OutputDrain, nil
	}
	env := windowsEnv(l.Env, c.Wine.Prefix)
	for _, kv := range loaderEnv {
		if k, _, _ := strings.Cut(kv, "="); !hasKey(env, k) {
			env = append(env, kv)
		}
	}
	args := append([]string{loader, l.Program}, rest...)
	if launcher := filepath.Join(c.Wine.Prefix, "drive_c", "windows", "system32", LabRunName); !wineQuotesLikeWSL(rest) && isFile(launcher) {
		// Wine would build another command line than WSL: hand the exact one to labrun.exe.
		program := windowsPath(l.Program, driveCs(c.Wine.Prefix))
		line := `"` + program + `"`
		for _, a := range rest {
			line += " " + QuoteWindowsArg(a)
		}
		args = []string{loader, launcher}
		env = append(env, "LABRUN_PROGRAM="+program, "LABRUN_CMDLINE="+line)
	}
	return &exec.Cmd{Path: loader, Args: args, Dir: l.Dir, Env: wineEnv(env, c.Wine)}, c.Wine.WaitDelay, nil
}

// explorerCommand maps the guest's `explorer.exe TARGET` (Wine's explorer.exe in the prefix,
// one argument that is a URL, a drive path or a relative path) to the prefix's opener
// (wineprefix.OpenerName) instead of Wine: Wine's explorer opens its own file-browser window
// for a directory, which hangs without a display. The opener records the URL or the Windows
// path in wineprefix.OpenedLog, runs xdg-open on the URL or host path when the prefix was
// warmed with a desktop, and exits 1 as WSL's explorer.exe does. nil: run Wine as usual
// (other arguments, such as /select,PATH, or a prefix without the opener).
func (c *Config) explorerCommand(l launch, args []string) *exec.Cmd {
	if len(args) != 1 || args[0] == "" || strings.HasPrefix(args[0], "/") || !strings.EqualFold(filepath.Base(l.Program), "explorer.exe") {
		return nil
	}
	opener := filepath.Join(c.Wine.Prefix, wineprefix.OpenerName)
	if !isFile(opener) {
		return nil
	}
	drives := driveCs(c.Wine.Prefix)
	inPrefix := false
	for _, d := range drives {
		dir := filepath.Dir(l.Program)
		inPrefix = inPrefix || dir == filepath.Join(d, "windows") || dir == filepath.Join(d, "windows", "system32")
	}
	if !inPrefix {
		return nil
	}
	record, open := args[0], args[0]
	if !isURL(args[0]) {
		host, ok := explorerHostPath(args[0], l.Dir, drives[0])
		if !ok {
			return nil
		}
		record, open = windowsPath(host, drives), host
	}
	return &exec.Cmd{Path: opener, Args: []string{opener, "--explorer", record, open}, Dir: l.Dir, Env: l.Env}
}

// isURL: a scheme of two or more letters before ':' (one letter is a drive: C:\).
func isURL(s string) bool {
	scheme, _, ok := strings.Cut(s, ":")
	if !ok || len(scheme) < 2 {
		return false
	}
	for i, r := range scheme {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && (r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.')) {
			return false
		}
	}
	return true
}

// explorerHostPath is the host path of explorer's argument: C:\... under drive_c, Z:\... from
// the host's root, anything else without a drive relative to the working directory. Other
// drives and UNC paths: false.
func explorerHostPath(arg, dir, driveC string) (string, bool) {
	p := strings.ReplaceAll(arg, `\`, "/")
	switch {
	case strings.HasPrefix(p, "//"):
		return "", false
	case len(p) >= 2 && p[1] == ':':
		rest := strings.TrimPrefix(p[2:], "/")
		switch p[0] {
		case 'c', 'C':
			return filepath.Join(driveC, rest), true
		case 'z', 'Z':
			return filepath.Join("/", rest), true
		}
		return "", false
	}
	return filepath.Join(dir, p), true
}

// LabRunName is the launcher (pefixtures' labrun.exe, installed into the prefix's system32)
// that runs a program with an exact Windows command line.
const LabRunName = "labrun.exe"

// QuoteWindowsArg quotes one argument for a Windows command line as WSL does (MSVCRT rules,
// WSL's FormatCommandLine): quoted when empty or containing space, tab, CR, LF or '"'; inside
// the quotes '"' becomes \" with the backslashes before it doubled, and trailing backslashes
// are doubled.
func QuoteWindowsArg(a string) string {
	if a != "" && !strings.ContainsAny(a, " \t\r\n\"") {
		return a
	}
	var b strings.Builder
	b.WriteByte('"')
	slashes := 0
	for _, r := range a {
		switch r {
		case '\\':
			slashes++
		case '"':
			b.WriteString(strings.Repeat(`\`, slashes+1)) // the run itself is written below
			slashes = 0
		default:
			slashes = 0
		}
		b.WriteRune(r)
	}
	b.WriteString(strings.Repeat(`\`, slashes))
	b.WriteByte('"')
	return b.String()
}

// wineQuotesLikeWSL reports whether Wine's own command line for args (`wine PROGRAM
// ARGS...`) is WSL's: Wine quotes only arguments that are empty or hold a space or tab, and
// escapes '"' without quoting, so an argument with '"', CR or LF and no space or tab comes
// out differently (measured: pefixtures TestCommandLine).
func wineQuotesLikeWSL(args []string) bool {
	for _, a := range args {
		if strings.ContainsAny(a, "\"\r\n") && !strings.ContainsAny(a, " \t") {
			return false
		}
	}
	return true
}

// driveCs is the prefix's drive_c, and its target when it is a symlink (windowsPath's list).
func driveCs(prefix string) []string {
	d := []string{filepath.Join(prefix, "drive_c")}
	if real, err := filepath.EvalSymlinks(d[0]); err == nil && real != d[0] {
		d = append(d, real)
	}
	return d
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// wineEnv sets Wine's own variables over env: the lab's prefix, no debug output (the wine
// wrapper otherwise prints a hint on every run), the DLL overrides, and a UTF-8 locale (non-
// ASCII arguments are garbled without one).
func wineEnv(env []string, w WineConfig) []string {
	set := map[string]string{
		"WINEPREFIX":       w.Prefix,
		"WINEDEBUG":        "-all",
		"WINEDLLOVERRIDES": w.DLLOverrides,
	}
	utf8 := false
	for _, name := range []string{"LC_ALL", "LC_CTYPE", "LANG"} {
		if v, ok := lookupEnv(env, name); ok && v != "" {
			up := strings.ToUpper(v)
			utf8 = strings.Contains(up, "UTF-8") || strings.Contains(up, "UTF8")
			break
		}
	}
	if !utf8 {
		set["LC_ALL"] = "C.UTF-8"
	}
	out := make([]string, 0, len(env)+len(set))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if _, over := set[k]; over {
			continue
		}
		out = append(out, kv)
	}
	for _, k := range []string{"WINEPREFIX", "WINEDEBUG", "WINEDLLOVERRIDES", "LC_ALL"} {
		if v, ok := set[k]; ok {
			out = append(out, k+"="+v)
		}
	}
	return out
}

func hasKey(env []string, name string) bool {
	_, ok := lookupEnv(env, name)
	return ok
}

func lookupEnv(env []string, name string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}
