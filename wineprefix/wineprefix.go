// Package wineprefix manages the lab's own Wine prefixes: the "Windows" that PE programs run in
// on a Linux host.
//
// A prefix costs 6-12 s of `wineboot -i` and about 700 MB (Wine 8 copies every builtin DLL into
// drive_c/windows/system32). So one template is made per Wine version under the XDG cache dir,
// and each lab home or VM gets a copy of it (a plain file copy, well under a second with a warm
// page cache). Before programs run, a prefix is pre-warmed: a persistent wineserver plus a
// `wineboot` whose stdio is /dev/null, so that Wine's background services (services.exe,
// winedevice.exe, ...) are started by a process nobody reads from. Without it, the first program
// in a cold prefix hands its stdout/stderr to those services, and whoever reads its stderr to EOF
// waits for them (about 2 s, forever with a persistent server). Shutdown stops the server and
// every Wine process of the prefix and removes the server's socket directory that Debian's Wine
// leaves in $TMPDIR.
//
// Wine is optional for lab's users: every entry point reports ErrNoWine (with the apt-get command
// that fixes it) when no Wine is installed.
package wineprefix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"lab/internal/xdg"
)

// ErrNoWine: no Wine on this host.
var ErrNoWine = errors.New("wineprefix: wine is not installed on this host (install it with: apt-get install --no-install-recommends wine64 wine)")

// DLLOverrides is the WINEDLLOVERRIDES of every lab prefix: no Mono or Gecko installers
// (prefix creation would try to download them), no crash debugger (it writes a register dump
// to the crashing program's stdout).
const DLLOverrides = "mscoree,mshtml=;winedbg.exe=d"

// Names of the files lab writes into a template and a prefix.
const (
	templateDir   = "wine-template"
	templateStamp = ".lab-template.json"
	prefixStamp   = ".lab-prefix.json"
	// serverFile is where Debian's Wine records the name of its socket directory in $TMPDIR.
	serverFile = "wineserver"
)

// Options says where a prefix lives and where its template is cached.
type Options struct {
	Dir      string    // the prefix directory; required (made absolute)
	CacheDir string    // zero: $XDG_CACHE_HOME/lab or ~/.cache/lab; the template is CacheDir/wine-template
	Progress io.Writer // nil: silent; else one line per slow step
	// Wine is the wine loader. Zero: "wine" in PATH, then /usr/lib/wine/wine64.
	Wine string
	// Server is wineserver. Zero: "wineserver" in PATH, then /usr/lib/wine/wineserver64.
	Server string
	// Programs are installed into drive_c/windows/system32 on every Ensure (file name -> host
	// file; rewritten only when the content differs): the Windows commands WSL users type
	// that Wine lacks (pefixtures.SystemPrograms: clip.exe, ...).
	Programs map[string]string
}

// Prefix is a ready Wine prefix owned by the lab.
type Prefix struct {
	Dir         string   // absolute prefix directory (WINEPREFIX)
	Loader      string   // the wine loader: run a PE file as Loader PROGRAM ARGS...
	Server      string   // wineserver
	WineVersion string   // `wine --version`, e.g. "wine-8.0 (Debian 8.0~repack-4)"
	Programs    []string // file names Ensure installed into system32 (Options.Programs)
	// Prepare, when set, is called on every command Warm, Shutdown and Command make, just
	// before it starts (the hostagent puts Wine into its process tree with it).
	Prepare func(*exec.Cmd)
}

type stamp struct {
	WineVersion string    `json:"wine_version"`
	Created     time.Time `json:"created"`
}

// Find locates wine and wineserver (ErrNoWine when either is missing).
func Find(opts Options) (loader, server string, err error) {
	if loader, err = Loader(opts.Wine); err != nil {
		return "", "", err
	}
	if server = lookPath(opts.Server, []string{"wineserver"}, "/usr/lib/wine/wineserver64"); server == "" {
		return "", "", ErrNoWine
	}
	return loader, server, nil
}

// Loader finds the wine loader, the one lookup lab uses (prefixes, the relay's PE runner, the
// scenario suite): given (a path or a name in PATH) when set, else wine or wine64 in PATH,
// else Debian's /usr/lib/wine/wine64 (installed without the wine wrapper). ErrNoWine when
// there is none.
func Loader(given string) (string, error) {
	if p := lookPath(given, []string{"wine", "wine64"}, "/usr/lib/wine/wine64"); p != "" {
		return p, nil
	}
	return "", ErrNoWine
}

// lookPath: the given program (a path or a name in PATH), else the first of names in PATH,
// else fallback.
func lookPath(given string, names []string, fallback string) string {
	if given != "" {
		p, _ := exec.LookPath(given)
		return p
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if fi, err := os.Stat(fallback); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return fallback
	}
	return ""
}

// Ensure returns the prefix at opts.Dir, copying it from the template (made first if needed)
// when the directory does not hold a lab prefix yet. It does not start Wine in the prefix:
// call Warm before running programs.
func Ensure(ctx context.Context, opts Options) (*Prefix, error) {
	if opts.Dir == "" {
		return nil, errors.New("wineprefix: no prefix directory given")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("wineprefix: %w", err)
	}
	loader, server, err := Find(opts)
	if err != nil {
		return nil, err
	}
	version, err := wineVersion(ctx, loader)
	if err != nil {
		return nil, err
	}
	p := &Prefix{Dir: dir, Loader: loader, Server: server, WineVersion: version}
	for name := range opts.Programs {
		p.Programs = append(p.Programs, name)
	}
	sort.Strings(p.Programs)
	if isPrefix(dir) {
		if err := checkOwner(dir); err != nil {
			return nil, err
		}
		if err := layout(dir, opts.Programs); err != nil {
			return nil, err
		}
		return p, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("wineprefix: %w", err)
	}
	// Machines booting at once (lab run --parallel) copy the shared prefix once, not each.
	unlock, err := lockFile(ctx, dir+".lock")
	if err != nil {
		return nil, err
	}
	defer unlock()
	if isPrefix(dir) {
		return p, layout(dir, opts.Programs)
	}
	if err := checkReplaceable(dir); err != nil {
		return nil, err
	}
	cache := opts.CacheDir
	if cache == "" {
		if cache, err = xdg.Dir(xdg.Cache); err != nil {
			return nil, fmt.Errorf("wineprefix: %w", err)
		}
	}
	tmpl, err := ensureTemplate(ctx, cache, loader, server, version, opts.Progress)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("wineprefix: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	progress(opts.Progress, "wine: copying the prefix template to %s", dir)
	skip := map[string]bool{serverFile: true, templateStamp: true}
	if err := copyTree(ctx, tmpl, tmp, skip); err != nil {
		return nil, fmt.Errorf("wineprefix: copy the template: %w", err)
	}
	if err := writeStamp(filepath.Join(tmp, prefixStamp), version); err != nil {
		return nil, err
	}
	if err := layout(tmp, opts.Programs); err != nil {
		return nil, err
	}
	os.Remove(dir) // an empty directory (checkReplaceable) may stand in the way
	if err := os.Rename(tmp, dir); err != nil {
		if isPrefix(dir) {
			return p, layout(dir, opts.Programs) // another caller made it first
		}
		return nil, fmt.Errorf("wineprefix: %w", err)
	}
	return p, nil
}

// isPrefix: dir is a prefix lab made, or at least a complete Wine prefix.
func isPrefix(dir string) bool {
	if _, err := os.Lstat(filepath.Join(dir, prefixStamp)); err == nil {
		return true
	}
	_, err1 := os.Lstat(filepath.Join(dir, "system.reg"))
	_, err2 := os.Lstat(filepath.Join(dir, "drive_c"))
	return err1 == nil && err2 == nil
}

// checkReplaceable: dir is missing or an empty directory (never replace anyone's files).
func checkReplaceable(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("wineprefix: %w", err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("wineprefix: %s exists and is not a Wine prefix; remove it or choose another directory", dir)
	}
	return nil
}

// checkOwner: Wine refuses a prefix owned by someone else ("is not owned by you").
func checkOwner(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("wineprefix: %w", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("wineprefix: %s is owned by uid %d, and Wine only uses a prefix owned by its user (uid %d)", dir, st.Uid, os.Geteuid())
	}
	return nil
}

func writeStamp(path, version string) error {
	b, _ := json.Marshal(stamp{WineVersion: version, Created: time.Now().UTC()})
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("wineprefix: %w", err)
	}
	return nil
}

func readStamp(path string) (stamp, bool) {
	var s stamp
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &s) != nil {
		return s, false
	}
	return s, true
}

func progress(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// wineVersion runs `wine --version`, which needs no prefix and starts no server.
func wineVersion(ctx context.Context, loader string) (string, error) {
	cmd := exec.CommandContext(ctx, loader, "--version")
	cmd.Env = append(baseEnv(), "WINEDEBUG=-all")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("wineprefix: %s --version: %w", loader, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// baseEnv is the caller's environment without a display (prefix creation and warm-up must
// not open windows; Wine runs headless without one) and without Wine's own variables.
func baseEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "DISPLAY", "WAYLAND_DISPLAY", "WINEPREFIX", "WINEDEBUG", "WINEDLLOVERRIDES", "WINELOADER", "WINESERVER", "WINEARCH":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// desktopEnv is the caller's DISPLAY (Wine 8's only graphics driver for a desktop is X11;
// a Wayland session's XWayland sets DISPLAY too), for the desktop process labdesktop.exe
// starts: with it, Wine's X11 driver syncs the Windows clipboard with the host's.
func desktopEnv() []string {
	if d := os.Getenv("DISPLAY"); d != "" {
		return []string{"DISPLAY=" + d}
	}
	return nil
}

// wineVars are the variables every Wine process of prefix dir needs.
func wineVars(dir string) []string {
	return []string{
		"WINEPREFIX=" + dir,
		"WINEDEBUG=-all", // the wine wrapper prints a "wine32 is missing" hint on every run otherwise
		"WINEDLLOVERRIDES=" + DLLOverrides,
	}
}

// Env is what a program run in the prefix needs on top of its environment: WINEPREFIX,
// WINEDEBUG=-all and WINEDLLOVERRIDES. (Environ also fixes the locale.)
func (p *Prefix) Env() []string { return wineVars(p.Dir) }

// Environ returns base with the prefix's variables set and, unless base already selects a
// UTF-8 locale, LC_ALL=C.UTF-8: without a UTF-8 locale Wine garbles non-ASCII arguments.
func (p *Prefix) Environ(base []string) []string {
	set := map[string]bool{"WINEPREFIX": true, "WINEDEBUG": true, "WINEDLLOVERRIDES": true}
	utf8 := false
	for _, name := range []string{"LC_ALL", "LC_CTYPE", "LANG"} {
		if v := lookupEnv(base, name); v != "" {
			up := strings.ToUpper(v)
			utf8 = strings.Contains(up, "UTF-8") || strings.Contains(up, "UTF8")
			break
		}
	}
	if !utf8 {
		set["LC_ALL"] = true
	}
	out := make([]string, 0, len(base)+4)
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if !set[k] {
			out = append(out, kv)
		}
	}
	out = append(out, p.Env()...)
	if !utf8 {
		out = append(out, "LC_ALL=C.UTF-8")
	}
	return out
}

func lookupEnv(env []string, name string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == name {
			return v
		}
	}
	return ""
}

// DriveC is the host directory Windows programs see as C:\ (WSL's /mnt/c).
func (p *Prefix) DriveC() string { return filepath.Join(p.Dir, "drive_c") }

// Command returns the exec.Cmd that runs a PE program in the prefix as `wine PROGRAM ARGS...`,
// in its own process group (signal the group: Wine double-forks child processes, which keep
// the group), with the caller's environment plus Environ's variables.
func (p *Prefix) Command(ctx context.Context, program string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, p.Loader, append([]string{program}, args...)...)
	cmd.Env = p.Environ(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// Belt and braces for a prefix that was not warmed: its services would hold the pipes.
	cmd.WaitDelay = 2 * time.Second
	if p.Prepare != nil {
		p.Prepare(cmd)
	}
	return cmd
}

// internal runs one of Wine's own commands for prefix dir with stdio on /dev/null (nobody may
// inherit a pipe of ours) and waits for it.
func internal(ctx context.Context, dir string, name string, args ...string) error {
	return internalPrepared(ctx, nil, dir, name, args...)
}

// internalPrepared is internal with prepare (if not nil) called on the command.
func internalPrepared(ctx context.Context, prepare func(*exec.Cmd), dir string, name string, args ...string) error {
	return internalEnv(ctx, prepare, dir, nil, name, args...)
}

// internalEnv is internalPrepared with extra variables (desktopEnv for Warm's wineboot).
func internalEnv(ctx context.Context, prepare func(*exec.Cmd), dir string, extra []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(append(append(baseEnv(), wineVars(dir)...), "LANG=C.UTF-8", "LC_ALL=C.UTF-8"), extra...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	if prepare != nil {
		prepare(cmd)
	}
	// Stdin, Stdout, Stderr nil: /dev/null.
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("wineprefix: %s %s (WINEPREFIX=%s): %w", filepath.Base(name), strings.Join(args, " "), dir, err)
	}
	return nil
}

// Warm starts a persistent wineserver for the prefix and Wine's background services, with
// stdio on /dev/null, so that no program's pipes are inherited by them later, and points
// Wine's browser launcher at lab's opener (OpenedLog). Idempotent. When the caller has a
// DISPLAY, Wine's desktop gets it (the Windows clipboard is then the host's X11 clipboard);
// without one the prefix is headless and keeps its own clipboard.
func (p *Prefix) Warm(ctx context.Context) error {
	if err := internalPrepared(ctx, p.Prepare, p.Dir, p.Server, "-p"); err != nil {
		return err
	}
	// With the caller's DISPLAY: Wine's desktop process (explorer.exe /desktop), which
	// wineboot starts and labdesktop.exe keeps, is the one that syncs the Windows clipboard
	// with the host's X11 clipboard; started headless, it stays headless (measured: clip.exe
	// never reached Xvfb when only labdesktop.exe had DISPLAY).
	if err := internalEnv(ctx, p.Prepare, p.Dir, desktopEnv(), p.Loader, "wineboot"); err != nil {
		return err
	}
	return p.Configure(ctx)
}

// Configure applies lab's registry settings, in a running or stopped prefix (Warm calls it):
// the installed programs (Prefix.Programs) run as themselves, and Wine's browser launcher runs
// lab's opener (OpenedLog).
func (p *Prefix) Configure(ctx context.Context) error {
	opener, err := p.writeOpener()
	if err != nil {
		return err
	}
	// Wine runs its own builtin of a program it has one of (powershell.exe: a stub that
	// exits 0 without a word) even when system32 holds another PE file under that name,
	// unless the DLL override says native. One reg import for all the settings: each Wine
	// start costs 0.3-1 s on a busy host.
	vals := map[string]map[string]string{
		`HKEY_CURRENT_USER\Software\Wine\WineBrowser`:  {"Browsers": opener},
		`HKEY_CURRENT_USER\Software\Wine\DllOverrides`: {},
	}
	for _, name := range p.Programs {
		vals[`HKEY_CURRENT_USER\Software\Wine\DllOverrides`][name] = "native"
	}
	regFile := filepath.Join(p.Dir, "lab-settings.reg")
	if err := os.WriteFile(regFile, regFileContent(vals), 0o644); err != nil {
		return fmt.Errorf("wineprefix: %w", err)
	}
	if err := internal(ctx, p.Dir, p.Loader, "reg", "import", `Z:`+strings.ReplaceAll(regFile, "/", `\`)); err != nil {
		return err
	}
	for _, name := range p.Programs {
		if name == "labdesktop.exe" {
			return p.keepDesktop()
		}
	}
	return nil
}

// keepDesktop starts labdesktop.exe (pefixtures), which keeps Wine's desktop process and the
// clipboard alive between programs: Wine's explorer.exe /desktop exits about a second after
// its last user, and clip.exe's text went with it. It runs until Shutdown's wineserver -k; a
// second one exits at once. Its stdio is /dev/null and it has its own process group, so no
// program's pipes or group hold it.
func (p *Prefix) keepDesktop() error {
	cmd := exec.Command(p.Loader, "labdesktop.exe")
	cmd.Env = append(append(append(baseEnv(), wineVars(p.Dir)...), "LANG=C.UTF-8", "LC_ALL=C.UTF-8"), desktopEnv()...)
	cmd.Dir = p.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if p.Prepare != nil {
		p.Prepare(cmd)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("wineprefix: start labdesktop.exe: %w", err)
	}
	go cmd.Wait() // reaped when wineserver -k ends it (or at once when one already runs)
	return nil
}

// Shutdown stops the prefix's wineserver and every Wine process of the prefix
// (`wineserver -k`, then `wineserver -w`), then removes the server's socket directory.
// It is safe to call when nothing runs.
func (p *Prefix) Shutdown(ctx context.Context) error {
	// -k exits 1 both when it killed a server and when there was none: not an error signal.
	_ = internalPrepared(ctx, p.Prepare, p.Dir, p.Server, "-k")
	if err := internalPrepared(ctx, p.Prepare, p.Dir, p.Server, "-w"); err != nil {
		return err
	}
	return cleanServerDir(p.Dir)
}

// Remove shuts the prefix down and deletes it.
func (p *Prefix) Remove(ctx context.Context) error {
	if err := p.Shutdown(ctx); err != nil {
		return err
	}
	if err := os.RemoveAll(p.Dir); err != nil {
		return fmt.Errorf("wineprefix: %w", err)
	}
	return nil
}

var serverDirName = regexp.MustCompile(`^wine-[A-Za-z0-9]{6}$`)

// cleanServerDir removes the $TMPDIR/wine-XXXXXX directory that Debian's Wine recorded in
// PREFIX/wineserver, when it holds nothing but this prefix's server-DEV-INODE directory (a
// server that exited leaves it behind; it is recreated on the next start).
func cleanServerDir(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, serverFile))
	if err != nil {
		return nil // upstream Wine, or never started
	}
	name := strings.TrimSpace(string(b))
	if !serverDirName.MatchString(name) {
		return nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	want := fmt.Sprintf("server-%x-%x", st.Dev, st.Ino)
	for _, base := range uniq(os.TempDir(), "/tmp") {
		sd := filepath.Join(base, name)
		ents, err := os.ReadDir(sd)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if e.Name() != want {
				return nil // not only ours: leave it
			}
		}
		if err := os.RemoveAll(sd); err != nil {
			return fmt.Errorf("wineprefix: remove the wineserver directory: %w", err)
		}
	}
	return nil
}

func uniq(a, b string) []string {
	if filepath.Clean(a) == filepath.Clean(b) {
		return []string{a}
	}
	return []string{a, b}
}
