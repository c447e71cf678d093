package host

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
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

// launch is a fully authorised request, in host terms.
type launch struct {
	Program string   // resolved host path of the program
	Args    []string // argv, argv[0] as the guest gave it
	Dir     string   // host working directory
	Env     []string // host environment
	Format  Format
	Interp  []string // FormatInterp: the interpreter's argv (Config.Formats)
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
		return cmd, c.OutputDrain, nil
	}
}

// wineLoader finds the wine loader.
func (c *Config) wineLoader() (string, error) {
	if c.Wine.Path != "" {
		return c.Wine.Path, nil
	}
	if p, err := exec.LookPath("wine"); err == nil {
		return p, nil
	}
	const wine64 = "/usr/lib/wine/wine64"
	if _, err := os.Stat(wine64); err == nil {
		return wine64, nil
	}
	return "", errors.New("host: cannot run a Windows (PE) program: wine is not installed on the host (apt-get install --no-install-recommends wine64 wine)")
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
	loader, err := c.wineLoader()
	if err != nil {
		return nil, 0, err
	}
	if err := os.MkdirAll(filepath.Dir(c.Wine.Prefix), 0o755); err != nil {
		return nil, 0, fmt.Errorf("host: wine prefix: %w", err)
	}
	args := []string{loader, l.Program}
	if len(l.Args) > 1 {
		args = append(args, l.Args[1:]...)
	}
	return &exec.Cmd{Path: loader, Args: args, Dir: l.Dir, Env: wineEnv(windowsEnv(l.Env, c.Wine.Prefix), c.Wine)}, c.Wine.WaitDelay, nil
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

func lookupEnv(env []string, name string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}
