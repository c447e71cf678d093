// Package pefixtures builds small Windows console programs (PE files) that tests run with Wine:
// the "Windows side" of the lab's interop tests.
//
// The programs are Go, embedded in lab as source and built for GOOS=windows with Go 1.21.4 in a
// module of their own (go 1.21 in its go.mod). Go 1.21.5 and later call
// bcryptprimitives.dll!ProcessPrng at start, which Wine gained only in 8.13 (Debian 12 ships
// 8.0), so PE files built by the project's own Go abort under Debian's Wine. The older
// toolchain comes through the Go module proxy (GOTOOLCHAIN), like any module; no C
// cross-compiler is needed. Built files are cached under the XDG cache dir, keyed by a hash of
// the sources and the toolchain, so a test run builds them once.
//
// The fixtures (file name -> behaviour):
//
//	echoargs.exe ARGS...   prints each argument on its own line (UTF-8, from GetCommandLineW)
//	cat.exe                copies stdin to stdout
//	upper.exe              copies stdin to stdout in upper case, line by line
//	stderr.exe             "stdout N" lines to stdout and "stderr N" lines to stderr, N = 0..2
//	exit.exe N             exits with N
//	waitctrlc.exe          prints "ready", waits for Ctrl-C, prints "got ctrl-c", exits 42 (from its handler)
//	pwd.exe                prints its working directory (C:\... inside drive_c)
//	getenv.exe NAME        prints NAME's value; exits 1 when it is not set
//	cmdline.exe ARGS...    prints its command line as Windows gave it (GetCommandLineW)
//
// and the programs lab installs into every prefix's system32 (wineprefix.Options.Programs),
// the Windows commands WSL users type that Wine lacks:
//
//	clip.exe               puts stdin on the Windows clipboard (BOM / console code page rules)
//	paste.exe              prints the clipboard's text (PowerShell's Get-Clipboard -Raw)
//	powershell.exe         says that Wine has no PowerShell, exits 1
//	where.exe PATTERN...   Windows' where (Wine's is a stub): cwd, then PATH, with PATHEXT
//	labdesktop.exe         stays attached to the desktop so that the clipboard outlives clip.exe
//	labrun.exe             runs LABRUN_PROGRAM with the exact command line LABRUN_CMDLINE (the
//	                       relay's way around Wine's own quoting, see host.wineCommand)
package pefixtures

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"lab/internal/fsutil"
	"lab/internal/xdg"
)

//go:embed internal/src
var src embed.FS

// File names of the fixtures (keys of Build's map).
const (
	EchoArgs  = "echoargs.exe"
	Cat       = "cat.exe"
	Upper     = "upper.exe"
	Stderr    = "stderr.exe"
	Exit      = "exit.exe"
	WaitCtrlC = "waitctrlc.exe"
	Pwd       = "pwd.exe"
	Getenv    = "getenv.exe"
	Cmdline   = "cmdline.exe"

	Clip       = "clip.exe"
	Paste      = "paste.exe"
	PowerShell = "powershell.exe"
	LabRun     = "labrun.exe"
	LabDesktop = "labdesktop.exe"
	Where      = "where.exe"
)

// Names lists every fixture.
var Names = []string{EchoArgs, Cat, Upper, Stderr, Exit, WaitCtrlC, Pwd, Getenv, Cmdline, Clip, Paste, PowerShell, LabRun, LabDesktop, Where}

// SystemPrograms are the programs lab installs into a prefix's system32 (file name -> the
// same name): Windows commands that Wine does not ship.
var SystemPrograms = []string{Clip, Paste, PowerShell, LabRun, LabDesktop, Where}

// DefaultToolchain is the newest Go whose Windows binaries run on Wine < 8.13.
const DefaultToolchain = "go1.21.4"

// goMod is the fixtures' own go.mod: a module of its own, so that the old toolchain accepts it.
const goMod = "module labpefixtures\n\ngo 1.21\n"

// Options configures BuildWith.
type Options struct {
	OutDir    string    // where the .exe files are copied; zero: the paths point into the cache
	CacheDir  string    // zero: $XDG_CACHE_HOME/lab or ~/.cache/lab (files under CacheDir/pefixtures)
	Toolchain string    // GOTOOLCHAIN for the build; zero: DefaultToolchain
	Go        string    // the go command; zero: "go" in PATH
	Progress  io.Writer // nil: silent
}

// Build builds (or takes from the cache) every fixture and copies it into outDir (created if
// needed). It returns file name -> path, e.g. "echoargs.exe" -> outDir/echoargs.exe.
func Build(ctx context.Context, outDir string) (map[string]string, error) {
	return BuildWith(ctx, Options{OutDir: outDir})
}

// BuildWith is Build with options.
func BuildWith(ctx context.Context, opts Options) (map[string]string, error) {
	if opts.Toolchain == "" {
		opts.Toolchain = DefaultToolchain
	}
	if opts.CacheDir == "" {
		d, err := xdg.Dir(xdg.Cache)
		if err != nil {
			return nil, fmt.Errorf("pefixtures: %w", err)
		}
		opts.CacheDir = d
	}
	goBin := opts.Go
	if goBin == "" {
		p, err := exec.LookPath("go")
		if err != nil {
			return nil, fmt.Errorf("pefixtures: building the Windows fixtures needs the Go toolchain on PATH: %w", err)
		}
		goBin = p
	}
	files, err := sources()
	if err != nil {
		return nil, err
	}
	key := cacheKey(opts.Toolchain, files)
	base := filepath.Join(opts.CacheDir, "pefixtures")
	dir := filepath.Join(base, key)
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, fmt.Errorf("pefixtures: %w", err)
	}
	if !complete(dir) {
		lock, err := fsutil.LockFile(ctx, filepath.Join(base, ".lock"))
		if err != nil {
			return nil, fmt.Errorf("pefixtures: %w", err)
		}
		if !complete(dir) {
			err = build(ctx, goBin, opts.Toolchain, files, dir, opts.Progress)
		}
		lock.Unlock()
		if err != nil {
			return nil, err
		}
	}
	out := make(map[string]string, len(Names))
	for _, n := range Names {
		p := filepath.Join(dir, n)
		if opts.OutDir != "" {
			if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
				return nil, fmt.Errorf("pefixtures: %w", err)
			}
			dst := filepath.Join(opts.OutDir, n)
			b, err := os.ReadFile(p)
			if err == nil {
				err = fsutil.WriteFile(dst, b, 0o755)
			}
			if err != nil {
				return nil, fmt.Errorf("pefixtures: %w", err)
			}
			p = dst
		}
		out[n] = p
	}
	return out, nil
}

// sources returns the module's files: relative path -> content (go.mod included).
func sources() (map[string][]byte, error) {
	files := map[string][]byte{"go.mod": []byte(goMod)}
	const root = "internal/src"
	err := fs.WalkDir(src, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := src.ReadFile(p)
		if err != nil {
			return err
		}
		files[strings.TrimPrefix(p, root+"/")] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pefixtures: embedded sources: %w", err)
	}
	return files, nil
}

// cacheKey hashes everything the build output depends on.
func cacheKey(toolchain string, files map[string][]byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "pefixtures v1\x00%s\x00windows/amd64\x00", toolchain)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(files[n]))
		h.Write(files[n])
	}
	return hex.EncodeToString(h.Sum(nil))[:20]
}

func complete(dir string) bool {
	for _, n := range Names {
		if fi, err := os.Stat(filepath.Join(dir, n)); err != nil || !fi.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// build writes the module out, builds every program with one `go build` and moves the
// results into dir.
func build(ctx context.Context, goBin, toolchain string, files map[string][]byte, dir string, prog io.Writer) error {
	work, err := os.MkdirTemp("", "lab-pefixtures-")
	if err != nil {
		return fmt.Errorf("pefixtures: %w", err)
	}
	defer os.RemoveAll(work)
	srcDir := filepath.Join(work, "src")
	for n, b := range files {
		p := filepath.Join(srcDir, filepath.FromSlash(path.Clean(n)))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("pefixtures: %w", err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return fmt.Errorf("pefixtures: %w", err)
		}
	}
	tmpOut := dir + ".tmp"
	if err := os.RemoveAll(tmpOut); err != nil {
		return fmt.Errorf("pefixtures: %w", err)
	}
	if err := os.MkdirAll(tmpOut, 0o755); err != nil {
		return fmt.Errorf("pefixtures: %w", err)
	}
	if prog != nil {
		fmt.Fprintf(prog, "pefixtures: building the Windows fixtures with %s (the first time downloads that toolchain through the Go module proxy)\n", toolchain)
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", tmpOut+string(filepath.Separator), "./...")
	cmd.Dir = srcDir
	cmd.Env = append(filterEnv(os.Environ(), "GOFLAGS", "GOOS", "GOARCH", "CGO_ENABLED", "GOTOOLCHAIN", "GOWORK", "GO111MODULE"),
		"GOTOOLCHAIN="+toolchain, "GOOS=windows", "GOARCH=amd64", "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-mod=mod")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pefixtures: GOTOOLCHAIN=%s GOOS=windows go build: %w\n%s(the toolchain comes from the Go module proxy: check GOPROXY)", toolchain, err, out)
	}
	if !complete(tmpOut) {
		return fmt.Errorf("pefixtures: go build did not produce every fixture in %s:\n%s", tmpOut, out)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("pefixtures: %w", err)
	}
	if err := os.Rename(tmpOut, dir); err != nil {
		return fmt.Errorf("pefixtures: %w", err)
	}
	if prog != nil {
		fmt.Fprintf(prog, "pefixtures: built in %.1fs\n", time.Since(start).Seconds())
	}
	return nil
}

func filterEnv(env []string, drop ...string) []string {
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, d := range drop {
			if k == d {
				keep = false
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

// CacheKey is the cache directory name (under CACHE/pefixtures) of this lab's fixtures with
// the default toolchain: lab image prune keeps it and removes the others.
func CacheKey() (string, error) {
	files, err := sources()
	if err != nil {
		return "", err
	}
	return cacheKey(DefaultToolchain, files), nil
}
