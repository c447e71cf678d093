package labtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// Required reports whether LAB_REQUIRE_VM is set (make test and CI set it to 1): then a
// missing QEMU, Wine or other tool fails a test instead of skipping it, so a CI machine
// without them cannot pass by skipping.
func Required() bool {
	v := os.Getenv("LAB_REQUIRE_VM")
	return v != "" && v != "0"
}

// SkipOrFail ends tb for a missing prerequisite: a skip, or a failure when Required.
func SkipOrFail(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		tb.Fatalf("%s (LAB_REQUIRE_VM is set: this is a failure; run make deps)", msg)
	}
	tb.Skipf("skipped: %s (run make deps, or set LAB_REQUIRE_VM=1 to make this a failure)", msg)
}

// Need skips tb (fails it when Required) unless every tool is there: a program name is
// looked up in PATH, an absolute path (firmware such as qboot.rom) must exist.
func Need(tb testing.TB, tools ...string) {
	tb.Helper()
	if m := missing(tools); m != "" {
		SkipOrFail(tb, "%s not found", m)
	}
}

// Have reports whether every tool is there, for a test that goes on without an optional
// part: it logs what is missing, or fails tb (without stopping it) when Required.
func Have(tb testing.TB, tools ...string) bool {
	tb.Helper()
	m := missing(tools)
	switch {
	case m == "":
		return true
	case Required():
		tb.Errorf("%s not found (LAB_REQUIRE_VM is set: this is a failure; run make deps)", m)
	default:
		tb.Logf("%s not found: skipping that part (run make deps)", m)
	}
	return false
}

// NeedVM skips tb (fails it when Required) when a test cannot boot a lab VM: no
// qemu-system-x86_64.
func NeedVM(tb testing.TB) {
	tb.Helper()
	Need(tb, "qemu-system-x86_64")
}

func missing(tools []string) string {
	for _, t := range tools {
		var err error
		if filepath.IsAbs(t) {
			_, err = os.Stat(t)
		} else {
			_, err = exec.LookPath(t)
		}
		if err != nil {
			return t
		}
	}
	return ""
}

// GoBuild builds the package pkg (an import path, or a directory relative to the test's
// package) into the executable out with the Go toolchain that runs the test. With race the
// binary has the race detector (a daemon under test is checked too); otherwise it is
// built with CGO_ENABLED=0, as lab ships.
func GoBuild(out, pkg string, race bool) error {
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), append(args, pkg)...)
	if !race {
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// SyncBuffer is a bytes.Buffer that a process's output goroutine may write while the test
// reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Log is an io.Writer that sends each write to tb.Log as one line. Writes after the test
// ended (a session closing late) are dropped rather than panicking.
func Log(tb testing.TB) *LogWriter { return &LogWriter{tb: tb} }

// LogWriter: see Log.
type LogWriter struct{ tb testing.TB }

func (w *LogWriter) Write(p []byte) (int, error) {
	defer func() { recover() }() // testing panics on Log after the test returned
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
