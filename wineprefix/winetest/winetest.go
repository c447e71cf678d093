// Package winetest gives a test package one warm lab Wine prefix, shared by its tests and
// removed by TestMain, and the project's skip rule: without Wine a test skips with the command
// that installs it, unless LAB_REQUIRE_VM=1 (make test), where a missing Wine fails the test
// (labtest.SkipOrFail).
package winetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"lab/internal/labtest"
	"lab/wineprefix"
)

// NeedWine skips (or, when Required, fails) tb when Wine is not installed.
func NeedWine(tb testing.TB) {
	tb.Helper()
	if _, _, err := wineprefix.Find(wineprefix.Options{}); err != nil {
		labtest.SkipOrFail(tb, "%v", err)
	}
}

// Shared is one prefix for a test package: Get makes it on first use (template from the
// user's cache, copy in a temporary directory, warmed); Close, from TestMain, removes it.
type Shared struct {
	once   sync.Once
	p      *wineprefix.Prefix
	tmp    string
	err    error
	Copied time.Duration // how long Ensure took (template creation included when it ran)
}

// Get returns the warm prefix, skipping or failing tb as NeedWine does.
func (s *Shared) Get(tb testing.TB) *wineprefix.Prefix {
	tb.Helper()
	NeedWine(tb)
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		s.tmp, s.err = os.MkdirTemp("", "lab-winetest-")
		if s.err != nil {
			return
		}
		start := time.Now()
		s.p, s.err = wineprefix.Ensure(ctx, wineprefix.Options{Dir: filepath.Join(s.tmp, "prefix")})
		s.Copied = time.Since(start)
		if s.err == nil {
			s.err = s.p.Warm(ctx)
		}
	})
	if s.err != nil {
		if errors.Is(s.err, wineprefix.ErrNoWine) {
			labtest.SkipOrFail(tb, "%v", s.err)
		}
		tb.Fatal(s.err)
	}
	return s.p
}

// Run runs program in p (in dir, with stdin when not nil and env added) and returns its
// stdout, stderr and exit code. It fails tb when the output drain timed out: a warm prefix
// must never leave a pipe open.
func Run(tb testing.TB, p *wineprefix.Prefix, dir string, stdin io.Reader, env []string, program string, args ...string) (string, string, int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := p.Command(ctx, program, args...)
	cmd.Dir = dir
	cmd.Env = append(cmd.Env, env...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.Is(err, exec.ErrWaitDelay):
		tb.Fatalf("%s %q: output pipes stayed open after the program exited (prefix not warm?)", filepath.Base(program), args)
	case errors.As(err, &ee):
	case err != nil:
		tb.Fatalf("%s %q: %v", filepath.Base(program), args, err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// Main is a TestMain's body: m's tests, then Close; a failed Close fails the run.
func (s *Shared) Main(m *testing.M) {
	code := m.Run()
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// Close shuts the prefix down and removes it.
func (s *Shared) Close() error {
	var err error
	if s.p != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err = s.p.Shutdown(ctx)
	}
	if s.tmp != "" {
		if rerr := os.RemoveAll(s.tmp); err == nil && rerr != nil {
			err = fmt.Errorf("winetest: %w", rerr)
		}
	}
	return err
}
