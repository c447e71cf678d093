// Package suitetest is what the end-to-end suites' tests share (scenarios/suite on the
// default guest, scenarios/suite/arm64, scenarios/debiansuite): the test binary acting
// as the VM's hostagent, the guest interpreter built for the guest's architecture, and
// a Windows side of the test's own. Each suite boots its own kind of guest; this is the
// setup around the boot, written once.
package suitetest

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"lab/machine"
	"lab/scenarios"
	"lab/vm"
	"lab/wineprefix"
)

// Main runs the test binary as the VM's hostagent when env is "1" (vm.Config.Hostagent
// re-executes os.Args[0] with env set), serving machine.Tasks as lab up's hostagent
// does, so the suites run the same supervisor code as lab up; else it runs the tests.
func Main(m *testing.M, env string) {
	if os.Getenv(env) == "1" {
		os.Exit(runHostagent(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func runHostagent(args []string) int {
	fs := flag.NewFlagSet("hostagent", flag.ContinueOnError)
	dir := fs.String("state-dir", "", "")
	if err := fs.Parse(args); err != nil || *dir == "" {
		fmt.Fprintln(os.Stderr, "hostagent: --state-dir is required")
		return 2
	}
	// As `lab hostagent` runs under lab's main: SIGINT and SIGTERM end it cleanly.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	h := &vm.Hostagent{StateDir: *dir, Tasks: machine.Tasks()}
	if err := h.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "hostagent:", err)
		return 1
	}
	return 0
}

// Guest is a suite's VM that Boot started.
type Guest struct {
	Instance *vm.Instance
	Client   *vm.Client    // SSH to the guest; the test closes it
	Took     time.Duration // vm.Up's time: the boot to SSH, an image build included
	stateDir string
	t        testing.TB
	stopped  bool
}

// Boot starts the VM of cfg (cfg.StateDir is required) with the test binary as its
// hostagent, as Main serves it: env is set to "1" while vm.Up re-executes os.Args[0]
// (cfg.Hostagent's zero is that), and connects to it. The VM is stopped at t's cleanup
// unless Stop stopped it before.
func Boot(ctx context.Context, t testing.TB, env string, cfg vm.Config) *Guest {
	t.Helper()
	if cfg.StateDir == "" {
		t.Fatal("suitetest.Boot: cfg.StateDir is required")
	}
	if cfg.Hostagent == nil {
		cfg.Hostagent = []string{os.Args[0]}
	}
	var progress bytes.Buffer
	cfg.Progress = &progress
	t.Setenv(env, "1")
	start := time.Now()
	in, err := vm.Up(ctx, cfg)
	took := time.Since(start)
	os.Unsetenv(env)
	if err != nil {
		t.Fatalf("vm.Up: %v\n%s", err, progress.String())
	}
	g := &Guest{Instance: in, Took: took, stateDir: cfg.StateDir, t: t}
	t.Cleanup(g.Stop)
	if g.Client, err = vm.Connect(ctx, cfg.StateDir); err != nil {
		t.Fatal(err)
	}
	return g
}

// Stop stops the VM (lab down: a disk is kept), once; a failure fails the test.
func (g *Guest) Stop() {
	if g.stopped {
		return
	}
	g.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := vm.Down(ctx, g.stateDir); err != nil {
		g.t.Errorf("vm.Down: %v", err)
	}
}

// Interpreter builds lab-interop (static) for the guest architecture goarch as the
// file out, with any extra go build flags (the suite also builds a stripped one).
func Interpreter(ctx context.Context, t testing.TB, out, goarch string, flags ...string) string {
	t.Helper()
	mod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(mod)) == "" {
		t.Fatalf("go env GOMOD: %v", err)
	}
	args := append(append([]string{"build", "-trimpath"}, flags...), "-o", out, "./cmd/lab-interop")
	build := exec.CommandContext(ctx, "go", args...)
	build.Dir = filepath.Dir(strings.TrimSpace(string(mod)))
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build lab-interop for %s: %v\n%s", goarch, err, b)
	}
	return out
}

// Windows makes a Wine prefix of the test's own in dir/wine, as lab up sets the Windows
// side up when Wine is installed, and returns the VM's shares: its drive_c (/mnt/c);
// none without Wine (the pe scenarios then skip). Its wineserver is stopped at cleanup,
// after the VM's own cleanup (registered later, run first).
func Windows(ctx context.Context, t testing.TB, dir string) []vm.Share {
	t.Helper()
	prefix := filepath.Join(dir, "wine")
	_, sh, err := machine.EnsureWindows(ctx, prefix, nil)
	if errors.Is(err, wineprefix.ErrNoWine) {
		t.Logf("no Windows personality: %v (the pe scenarios skip)", err)
		return nil
	}
	if err != nil {
		t.Fatalf("wine prefix: %v", err)
	}
	t.Cleanup(func() {
		if err := machine.ShutdownWindows(context.Background(), prefix); err != nil {
			t.Errorf("wine shutdown: %v", err)
		}
	})
	return []vm.Share{sh}
}

// Selection reads what the environment asks of a suite run: LAB_SCENARIOS selects
// scenarios (comma-separated patterns), LAB_SCENARIOS_VERBOSE=1 keeps the transcripts
// of passing ones too.
func Selection() (patterns []string, verbose bool) {
	if p := os.Getenv("LAB_SCENARIOS"); p != "" {
		patterns = strings.Split(p, ",")
	}
	return patterns, os.Getenv("LAB_SCENARIOS_VERBOSE") != ""
}

// Results reports each scenario of rep as a subtest: a skip as a skip, a failure with
// its transcript and the relay's and guest's logs of its time.
func Results(t *testing.T, rep *scenarios.Report, verbose bool) {
	for _, r := range rep.Results {
		t.Run(r.Name, func(t *testing.T) {
			if verbose {
				t.Log(r.Log)
			}
			switch r.Status {
			case scenarios.Skip:
				t.Skip(strings.TrimSpace(r.Log))
			case scenarios.Fail:
				var b strings.Builder
				b.WriteString(r.Log)
				if len(r.RelayLog) > 0 {
					b.WriteString("relay log:\n" + strings.Join(r.RelayLog, "\n") + "\n")
				}
				if len(r.GuestLog) > 0 {
					b.WriteString("guest log:\n" + strings.Join(r.GuestLog, "\n") + "\n")
				}
				t.Errorf("%s: %s\n%s", r.Name, r.Summary, b.String())
			}
		})
	}
}
