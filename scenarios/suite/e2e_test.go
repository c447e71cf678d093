package suite

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"lab/internal/labtest"
	"lab/machine"
	"lab/scenarios"
	"lab/scenarios/suite/suitetest"
	"lab/vm"
)

// hostagentEnv makes the test binary act as the VM's hostagent (vm.Config.Hostagent),
// serving the relay task, so the suite runs the same supervisor code as lab up.
const hostagentEnv = "LAB_SUITE_TEST_HOSTAGENT"

func TestMain(m *testing.M) { suitetest.Main(m, hostagentEnv) }

// TestIntegrationScenarios boots one VM under TCG, provisions it, runs every scenario
// as a subtest and stops the VM.
func TestIntegrationScenarios(t *testing.T) {
	labtest.NeedVM(t)
	if testing.Short() {
		t.Skip("-short: the end-to-end suite boots a VM")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	interp := suitetest.Interpreter(ctx, t, filepath.Join(tmp, "lab-interop"), runtime.GOARCH)
	stateDir := filepath.Join(tmp, "vm")
	// No share of the test's own: the suite uses the scratch share lab up gives every VM.
	// The Windows personality, as lab up sets it up when Wine is installed: a prefix of
	// the VM's own (here in the test's temp dir) whose drive_c is /mnt/c.
	shares := suitetest.Windows(ctx, t, tmp)
	g := suitetest.Boot(ctx, t, hostagentEnv, vm.Config{
		Name:     "suite",
		StateDir: stateDir,
		Accel:    "auto",
		Vsock:    "auto",
		Shares:   shares,
		Scratch:  vm.DefaultScratch,
	})
	in, c := g.Instance, g.Client
	t.Logf("VM up: %s, %s vsock", in.Accel, in.Vsock)
	defer c.Close()

	var setup bytes.Buffer
	res, err := machine.Provision(ctx, c, stateDir, machine.ProvisionOptions{Interpreter: interp, Progress: &setup})
	if err != nil {
		t.Fatalf("provision: %v\n%s", err, setup.String())
	}
	if !res.Changed() {
		t.Errorf("first provisioning changed nothing on a fresh guest:\n%s", setup.String())
	}
	res, err = machine.Provision(ctx, c, stateDir, machine.ProvisionOptions{Interpreter: interp})
	if err != nil {
		t.Fatalf("second provision: %v", err)
	}
	if res.Changed() {
		t.Errorf("second provisioning changed %s; want nothing", res.Summary())
	}
	// An updated interpreter is replaced, and the rules registered again (flag F keeps
	// the old file open otherwise); launches then use the new one.
	interp2 := suitetest.Interpreter(ctx, t, filepath.Join(tmp, "lab-interop-stripped"), runtime.GOARCH, "-ldflags=-s -w")
	res, err = machine.Provision(ctx, c, stateDir, machine.ProvisionOptions{Interpreter: interp2})
	if err != nil {
		t.Fatalf("provision with a new interpreter: %v", err)
	}
	changed := map[string]bool{}
	for _, s := range res.Steps {
		changed[s.Name] = s.Changed
	}
	if !changed["interpreter"] || !changed["rule WSLInterop"] || !changed["rule lab-host"] || changed["config"] {
		t.Errorf("new interpreter: changed %s; want interpreter and both rules only", res.Summary())
	}
	if _, err := machine.Provision(ctx, c, stateDir, machine.ProvisionOptions{Interpreter: interp}); err != nil {
		t.Fatalf("provision back: %v", err)
	}

	env, err := Env(ctx, c, stateDir, Options{Interpreter: interp, Progress: &setup})
	if err != nil {
		t.Fatalf("suite setup: %v\n%s", err, setup.String())
	}
	var prog bytes.Buffer
	patterns, verbose := suitetest.Selection()
	rep, err := scenarios.Run(ctx, env, scenarios.Options{Progress: &prog, Patterns: patterns, Verbose: verbose})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("scenario progress:\n%s", prog.String())
	suitetest.Results(t, rep, verbose)

	// Last, as it ends the VM: SIGKILL of the hostagent takes every host process it runs
	// with it (package proctree): a host program's tree with a daemonised grandchild,
	// Wine's persistent server for the VM's prefix, QEMU.
	t.Run("hostagent_killed", func(t *testing.T) {
		hostagentKilled(t, ctx, c, stateDir, interp, machine.PrefixOf(in))
	})
}

func hostagentKilled(t *testing.T, ctx context.Context, c *vm.Client, stateDir, interp, prefix string) {
	marker, script := labtest.HostTree(t)
	if _, err := machine.Expose(ctx, c, stateDir, []string{script}, "lab-tree", machine.ProvisionOptions{Interpreter: interp}); err != nil {
		t.Fatalf("expose: %v", err)
	}
	// The relay applies a new allow list within a tick; the stub's first launch may be
	// refused until it did, so launch until the tree runs. A launch blocks (the program
	// sleeps) until the hostagent dies and takes the connection with it.
	deadline := time.Now().Add(30 * time.Second)
	last := "(nothing)"
	for len(labtest.Procs(marker, "")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the exposed lab-tree never ran on the host; a launch said: %s", last)
		}
		res := make(chan string, 1)
		go func() {
			out, err := c.Output(ctx, "lab-tree")
			res <- fmt.Sprintf("%q, %v", out, err)
		}()
		select {
		case last = <-res: // refused or failed: try again
			time.Sleep(300 * time.Millisecond)
		case <-time.After(2 * time.Second): // still running: the tree should be there
		}
	}
	waitProcs(t, marker, "", 3)
	var wine []int
	if prefix != "" {
		wine = labtest.Procs("wineserver", "WINEPREFIX="+prefix)
		if len(wine) == 0 {
			t.Errorf("no wineserver of the VM's prefix %s runs", prefix)
		}
	}
	agent, qemu := readPID(filepath.Join(stateDir, vm.FileAgentPID)), readPID(filepath.Join(stateDir, vm.FileQEMUPID))
	if err := syscall.Kill(agent, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitProcs(t, marker, "", 0)
	for _, p := range append(wine, qemu) {
		deadline := time.Now().Add(20 * time.Second)
		for labtest.Alive(p) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d (wineserver or QEMU) outlived the hostagent", p)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func readPID(path string) int {
	b, _ := os.ReadFile(path)
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// waitProcs polls until exactly n processes match, or fails after 30 s.
func waitProcs(t *testing.T, word, env string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		pids := labtest.Procs(word, env)
		if len(pids) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes with %s: %v, want %d", word, pids, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
