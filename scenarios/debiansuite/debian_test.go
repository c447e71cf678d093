// Package debiansuite runs the whole scenario suite against the Debian/systemd guest
// (lab up --distro debian), booted once for the package, plus what only a distribution
// guest has: systemd's state, bash, apt, a disk that survives lab down + lab up with
// the binfmt rules and shares back at boot.
package debiansuite

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lab/images"
	"lab/internal/labtest"
	"lab/machine"
	"lab/provision"
	"lab/scenarios"
	"lab/scenarios/suite"
	"lab/scenarios/suite/suitetest"
	"lab/vm"
)

// hostagentEnv makes the test binary act as the VM's hostagent (as scenarios/suite does).
const hostagentEnv = "LAB_DEBIAN_TEST_HOSTAGENT"

func TestMain(m *testing.M) { suitetest.Main(m, hostagentEnv) }

// TestIntegrationDebian builds (or reuses) the Debian image, boots one machine on its
// own disk, checks it, runs every scenario against it, then stops it, boots it again on
// the same disk and checks what must have survived.
//
// It runs in make test wherever the image can be built: QEMU, the build's tools (make
// deps installs them; LAB_REQUIRE_VM=1 fails without them) and Debian 12 apt sources
// on the host (without them it skips saying so: they are where the image comes from).
// LAB_DEBIAN_SUITE=0 turns it off.
func TestIntegrationDebian(t *testing.T) {
	if os.Getenv("LAB_DEBIAN_SUITE") == "0" {
		t.Skip("LAB_DEBIAN_SUITE=0: the Debian guest's suite is turned off")
	}
	labtest.NeedVM(t)
	require := labtest.Required()
	if testing.Short() {
		t.Skip("-short: boots the Debian guest")
	}
	if err := images.DebianBuildable(context.Background()); err != nil {
		if require && !errors.Is(err, images.ErrNoDebianSources) {
			t.Fatalf("LAB_REQUIRE_VM is set and the Debian image cannot be built: %v", err)
		}
		t.Skipf("the Debian image cannot be built on this host: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()

	// The image: cached in the shared image cache; a first build needs the host's
	// package sources.
	var buildLog bytes.Buffer
	start := time.Now()
	img, err := images.Build(ctx, images.Options{Distro: images.DistroDebian, Progress: &buildLog})
	if err != nil {
		if !require {
			t.Skipf("no Debian image: %v", err)
		}
		t.Fatalf("the Debian image: %v\n%s", err, buildLog.String())
	}
	t.Logf("Debian image %s (%.0f MB, %d packages; this run %.1fs, its build %.0fs)", img.Dir,
		float64(img.Manifest.DiskSize)/1e6, len(img.Manifest.Packages), time.Since(start).Seconds(), img.Manifest.BuildSeconds)

	tmp := t.TempDir()
	interp := suitetest.Interpreter(ctx, t, filepath.Join(tmp, "lab-interop"), "amd64")
	shares := suitetest.Windows(ctx, t, tmp)
	wine := len(shares) > 0
	disk := filepath.Join(tmp, "data", "disk.qcow2")
	stateDir := filepath.Join(tmp, "vm")
	cfg := vm.Config{
		Name: "debian", StateDir: stateDir, Accel: "auto", Vsock: "auto", Shares: shares,
		Scratch: vm.DefaultScratch, Image: img, Disk: disk,
		// The opt-in suite also runs on busy shared hosts: a Debian boot under TCG at load
		// 20 on 2 cores missed even vm.DefaultDiskBootTimeout (6 min).
		BootTimeout: 15 * time.Minute,
	}
	g := suitetest.Boot(ctx, t, hostagentEnv, cfg)
	c, bootSSH := g.Client, g.Took
	provStart := time.Now()
	var setup bytes.Buffer
	res, err := machine.Provision(ctx, c, stateDir, machine.ProvisionOptions{Interpreter: interp, Progress: &setup})
	if err != nil {
		t.Fatalf("provision: %v\n%s", err, setup.String())
	}
	provTook := time.Since(provStart)
	if res, err = machine.Provision(ctx, c, stateDir, machine.ProvisionOptions{Interpreter: interp}); err != nil {
		t.Fatalf("second provision: %v", err)
	} else if res.Changed() {
		t.Errorf("second provisioning changed %s; want nothing", res.Summary())
	}
	t.Logf("first boot: boot to SSH %.1fs, provisioning %.1fs", bootSSH.Seconds(), provTook.Seconds())
	if u, err := vm.DiskUse(disk); err == nil {
		t.Logf("disk of a fresh machine (overlay after first boot and provisioning): %.1f MB on the host", float64(u)/1e6)
	}

	guest := func(cmd string) (string, error) {
		out, err := c.Output(ctx, cmd)
		return strings.TrimSpace(string(out)), err
	}
	t.Run("systemd", func(t *testing.T) {
		// Wait for the boot to finish: is-system-running says "starting" until then.
		out, _ := guest("timeout 120 systemctl is-system-running --wait")
		switch out {
		case "running":
		case "degraded":
			failed, _ := guest("systemctl --failed --no-legend --plain")
			t.Logf("systemd is degraded; failed units:\n%s", failed)
		default:
			jobs, _ := guest("systemctl list-jobs --no-legend; systemctl --failed --no-legend")
			t.Errorf("systemctl is-system-running = %q, want running or degraded\n%s", out, jobs)
		}
	})
	t.Run("bash", func(t *testing.T) {
		out, err := guest(`bash -c 'echo "$BASH_VERSION"; [[ -n $BASH ]] && echo bash-ok'`)
		if err != nil || !strings.HasSuffix(out, "bash-ok") {
			t.Errorf("bash: %q, %v", out, err)
		}
		if out, err := guest("getent passwd lab; sudo -u lab sudo -n true && echo sudo-ok"); err != nil || !strings.Contains(out, "/home/lab:/bin/bash") || !strings.HasSuffix(out, "sudo-ok") {
			t.Errorf("user lab with sudo: %q, %v", out, err)
		}
	})
	t.Run("apt", func(t *testing.T) {
		if out, err := guest("apt-get --version | head -n 1"); err != nil || !strings.HasPrefix(out, "apt ") {
			t.Fatalf("apt-get --version: %q, %v", out, err)
		}
		out, err := guest("apt-get -q -o Acquire::Retries=0 update 2>&1")
		if err != nil {
			t.Logf("OFFLINE: the guest cannot reach the host's package sources, so apt-get update/install are not checked (%v):\n%s", err, lastLines(out, 5))
			return
		}
		if out, err := guest("apt-get install -s -y hello 2>&1 | tail -n 2"); err != nil || !strings.Contains(out, "hello") {
			t.Errorf("apt-get install -s hello: %q, %v", out, err)
		}
	})
	t.Run("cmd.exe", func(t *testing.T) {
		if !wine {
			t.Skip("no Wine on the host: no /mnt/c")
		}
		out, err := guest("/mnt/c/Windows/System32/cmd.exe /c ver")
		if err != nil || !strings.Contains(out, "Microsoft Windows") {
			t.Errorf("cmd.exe /c ver: %q, %v", out, err)
		}
	})

	// The whole scenario suite, as scenarios/suite runs it on the initramfs.
	env, err := suite.Env(ctx, c, stateDir, suite.Options{Interpreter: interp, Progress: &setup})
	if err != nil {
		t.Fatalf("suite setup: %v\n%s", err, setup.String())
	}
	patterns, verbose := suitetest.Selection()
	var prog bytes.Buffer
	rep, err := scenarios.Run(ctx, env, scenarios.Options{Progress: &prog, Patterns: patterns, Verbose: verbose})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("scenario progress:\n%s", prog.String())
	t.Run("scenario", func(t *testing.T) { suitetest.Results(t, rep, verbose) })

	// lab down + lab up: the disk is kept; systemd restores the rules and the shares at
	// boot, before any provisioning.
	t.Run("persistence", func(t *testing.T) {
		if _, err := guest("echo kept-across-down-up > /root/lab-persist && sync"); err != nil {
			t.Fatal(err)
		}
		c.Close()
		g.Stop()
		// This boot is seeded as lab up seeds it (provisioning through lab's initrd, applied
		// by lab-instance before sshd). The state dir went with the stop, so the machine has
		// a new token: only the seed can put it in the guest before the provisioning below.
		cfg.BootFiles = machine.SeedFiles(machine.ProvisionOptions{Interpreter: interp})
		g = suitetest.Boot(ctx, t, hostagentEnv, cfg)
		c, bootSSH = g.Client, g.Took
		token, err := provision.EnsureToken(stateDir)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := guest("cat " + provision.TokenPath); err != nil || out != string(token) {
			t.Errorf("after a seeded boot, before provisioning: %s = %q, %v; want the state dir's token %q (the seed was not applied)", provision.TokenPath, out, err, token)
		}
		out, err := guest("cat /root/lab-persist")
		if err != nil || out != "kept-across-down-up" {
			t.Errorf("after down + up: /root/lab-persist = %q, %v", out, err)
		}
		if out, err := guest("head -n 1 /proc/sys/fs/binfmt_misc/WSLInterop; systemctl is-active lab-binfmt.service"); err != nil || out != "enabled\nactive" {
			t.Errorf("rules at boot (systemd-binfmt + lab-binfmt): %q, %v", out, err)
		}
		if wine {
			if out, err := guest("mountpoint /mnt/c"); err != nil {
				t.Errorf("/mnt/c at boot: %q, %v", out, err)
			}
		}
		if out, err := guest("lsmod | grep -c vsock"); err != nil || out == "0" {
			t.Errorf("vsock modules at boot: %q, %v", out, err)
		}
		// Boot to first interop exec on a machine that was provisioned before: provisioning
		// (as lab up runs it) then the first launch of a host program.
		pstart := time.Now()
		if _, err := machine.Expose(ctx, c, stateDir, []string{"/bin/true"}, "host-true", machine.ProvisionOptions{Interpreter: interp}); err != nil {
			t.Fatalf("expose: %v", err)
		}
		var first time.Duration
		for deadline := time.Now().Add(30 * time.Second); ; {
			if _, err := c.Output(ctx, "host-true"); err == nil {
				first = time.Since(pstart)
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("host-true never ran: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("second boot: boot to SSH %.1fs, to first interop exec %.1fs (provision + expose + launch %.1fs)",
			bootSSH.Seconds(), (bootSSH + first).Seconds(), first.Seconds())
		c.Close()
	})
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
