package arm64

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lab/images"
	"lab/internal/labtest"
	"lab/machine"
	"lab/scenarios"
	"lab/scenarios/suite"
	"lab/scenarios/suite/suitetest"
	"lab/vm"
)

// slowOnTCG are the scenarios LAB_ARM64_SCENARIOS=subset leaves out: the slowest under TCG
// emulating arm64 (on 2 shared cores at load average 10-13, from 44 s for throughput down to
// 4 s), all of them about the host side or the guest kernel rather than the interpreter's
// architecture, so the amd64 run of package suite covers them: relay throughput and scale
// (throughput, concurrent, idle_connections), provisioning and binfmt control (expose,
// interop_off, pe_interop_off, wsl_conf, wsl_names_off, wslinterop) and cwd_outside. By
// default every scenario runs: the whole suite takes about 3.5 minutes there since a vsock
// connect waits for the interpreter's connect timeout (it had failed `concurrent` after the
// kernel's own 2 s).
var slowOnTCG = map[string]bool{
	"throughput": true, "concurrent": true, "idle_connections": true,
	"expose": true, "interop_off": true, "pe_interop_off": true, "wsl_conf": true,
	"wsl_names_off": true, "wslinterop": true, "cwd_outside": true,
}

// hostagentEnv makes the test binary act as the VM's hostagent (vm.Config.Hostagent),
// serving the relay and wine tasks, as lab up's hostagent does.
const hostagentEnv = "LAB_ARM64_TEST_HOSTAGENT"

func TestMain(m *testing.M) { suitetest.Main(m, hostagentEnv) }

// TestIntegrationScenariosARM64 boots one arm64 VM, provisions it with an arm64
// lab-interop and runs the scenario suite against it, each scenario a subtest.
func TestIntegrationScenariosARM64(t *testing.T) {
	labtest.Need(t, "qemu-system-aarch64")
	if testing.Short() {
		t.Skip("-short: the arm64 suite boots a VM")
	}
	var subset bool
	switch v := os.Getenv("LAB_ARM64_SCENARIOS"); v {
	case "", "all":
	case "subset":
		subset = true
	default:
		t.Fatalf("LAB_ARM64_SCENARIOS=%q: want all (the default) or subset", v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	interp := suitetest.Interpreter(ctx, t, filepath.Join(tmp, "lab-interop-arm64"), "arm64")
	stateDir := filepath.Join(tmp, "vm")
	shares := suitetest.Windows(ctx, t, tmp)
	g := suitetest.Boot(ctx, t, hostagentEnv, vm.Config{
		Name:     "suite-arm64",
		StateDir: stateDir,
		Arch:     images.ARM64,
		Accel:    "auto",
		Vsock:    "auto",
		Shares:   shares,
		Scratch:  vm.DefaultScratch,
		// TCG on 2 shared cores: an arm64 boot takes several times the x86 one.
		BootTimeout: 5 * time.Minute,
	})
	in, c := g.Instance, g.Client
	defer c.Close()
	if in.Arch != images.ARM64 {
		t.Fatalf("instance arch = %q, want arm64", in.Arch)
	}
	t.Logf("arm64 VM up in %.1fs (image build included): %s (%s), %s vsock, image %s", g.Took.Seconds(), in.Accel, in.AccelReason, in.Vsock, in.Image)
	if out, err := c.Output(ctx, "uname -m"); err != nil || string(out) != "aarch64\n" {
		t.Fatalf("guest uname -m = %q, %v; want aarch64", out, err)
	}

	var setup bytes.Buffer
	res, err := machine.Provision(ctx, c, stateDir, machine.ProvisionOptions{Interpreter: interp, Progress: &setup})
	if err != nil {
		t.Fatalf("provision: %v\n%s", err, setup.String())
	}
	if res.Arch != "arm64" {
		t.Errorf("provisioning saw a %q guest, want arm64", res.Arch)
	}
	env, err := suite.Env(ctx, c, stateDir, suite.Options{Interpreter: interp, Progress: &setup})
	if err != nil {
		t.Fatalf("suite setup: %v\n%s", err, setup.String())
	}
	patterns, verbose := suitetest.Selection()
	all, err := scenarios.List()
	if err != nil {
		t.Fatal(err)
	}
	var run []scenarios.Scenario
	var left []string
	for _, sc := range all {
		if subset && slowOnTCG[sc.Name] {
			left = append(left, sc.Name)
			continue
		}
		run = append(run, sc)
	}
	if len(left) > 0 {
		t.Logf("SUBSET: %d of %d scenarios on arm64 (LAB_ARM64_SCENARIOS=subset); left out: %s",
			len(run), len(all), strings.Join(left, " "))
	}
	var prog bytes.Buffer
	runStart := time.Now()
	rep, err := scenarios.Run(ctx, env, scenarios.Options{Scenarios: run, Progress: &prog, Patterns: patterns, Verbose: verbose})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Machine == nil || rep.Machine.Arch != images.ARM64 {
		t.Errorf("the report names the machine %v, want an arm64 one", rep.Machine)
	}
	t.Logf("scenarios on arm64 in %.1fs:\n%s", time.Since(runStart).Seconds(), prog.String())
	suitetest.Results(t, rep, verbose)
}
