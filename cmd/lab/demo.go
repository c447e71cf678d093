package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"lab/provision/labvm"
	"lab/scenarios"
	"lab/scenarios/suite"
	"lab/vm"
)

func newDemoCommand() *cobra.Command {
	var name, accel, vsockMode, interp, junit string
	var tap, jsonOut, noInstall, noWindows bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Image, boot, provision, run every scenario, report, shut down",
		Long: `demo shows the whole mechanism on this machine: it installs QEMU if it is missing
(Debian/Ubuntu, from the host's apt sources), builds the default guest image (cached),
boots a VM (with its scratch share at /mnt/lab), provisions it, runs the whole scenario suite,
prints the report and shuts the VM down. Exit status 0 only if every scenario
passed (skipped ones are reported as skipped).`,
		Example: `  lab demo
  lab demo --junit report.xml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if !noInstall {
				if err := ensureQEMU(ctx); err != nil {
					return err
				}
			}
			var shares []vm.Share
			if !noWindows {
				sh, err := windowsShare(ctx, name, false, os.Stderr)
				if err != nil {
					return err
				}
				if sh != nil {
					shares = append(shares, *sh)
				}
			}
			fmt.Fprintf(os.Stderr, "demo: booting VM %q (image build on first use)\n", name)
			in, err := vm.Up(ctx, vm.Config{
				Name: name, Accel: accel, Vsock: vsockMode, Progress: os.Stderr,
				Shares: shares, Scratch: vm.DefaultScratch,
			})
			if err != nil {
				return err
			}
			defer func() {
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
				defer cancel()
				if err := vm.Down(dctx, in.StateDir); err != nil {
					fmt.Fprintln(os.Stderr, "demo: lab down:", err)
				} else {
					fmt.Fprintf(os.Stderr, "demo: VM %q is down\n", name)
				}
				if err := labvm.ShutdownWindows(dctx, labvm.PrefixOf(in)); err != nil {
					fmt.Fprintln(os.Stderr, "demo: stopping the Wine prefix:", err)
				}
			}()
			fmt.Fprintf(os.Stderr, "demo: up (%s, %s vsock, CID %d)\n", in.Accel, in.Vsock, in.CID)
			c, err := vm.Connect(ctx, in.StateDir)
			if err != nil {
				return err
			}
			defer c.Close()
			if _, err := labvm.Provision(ctx, c, in.StateDir, labvm.Options{Interpreter: interp, Progress: os.Stderr}); err != nil {
				return err
			}
			env, err := suite.Env(ctx, c, in.StateDir, suite.Options{Interpreter: interp, Progress: os.Stderr})
			if err != nil {
				return err
			}
			rep, err := scenarios.Run(ctx, env, scenarios.Options{Progress: os.Stderr})
			if err != nil {
				return err
			}
			if !tap && !jsonOut {
				fmt.Fprintln(cmd.OutOrStdout())
			}
			return writeReport(cmd.OutOrStdout(), rep, tap, jsonOut, junit)
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "demo", "name of the demo VM")
	f.StringVar(&accel, "accel", "auto", "accelerator: auto, kvm or tcg")
	f.StringVar(&vsockMode, "vsock", "auto", "vsock backend: auto, kernel or user")
	f.StringVar(&interp, "interpreter", "", "lab-interop binary for the guest (default: next to lab)")
	f.StringVar(&junit, "junit", "", "also write a JUnit XML report to FILE")
	f.BoolVar(&tap, "tap", false, "print TAP on stdout instead of the table")
	f.BoolVar(&jsonOut, "json", false, "print JSON on stdout instead of the table")
	f.BoolVar(&noInstall, "no-install", false, "never install packages; fail if QEMU is missing")
	f.BoolVar(&noWindows, "no-windows", false, "no Windows personality (the pe scenarios are then skipped)")
	return cmd
}

// ensureQEMU installs QEMU with apt-get when it is missing (the rest of what the demo
// needs, the image's packages, comes through the image builder).
func ensureQEMU(ctx context.Context) error {
	_, errQ := exec.LookPath("qemu-system-x86_64")
	_, errB := os.Stat("/usr/share/qemu/qboot.rom")
	if errQ == nil && errB == nil {
		return nil
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return errors.New("demo: QEMU is missing and this host has no apt-get: install qemu-system-x86 (with qboot.rom) and retry")
	}
	argv := []string{"apt-get", "install", "-y", "-qq", "--no-install-recommends", "qemu-system-x86", "qemu-system-data"}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("sudo"); err != nil {
			return errors.New("demo: QEMU is missing: run as root or install qemu-system-x86 yourself (or: make deps)")
		}
		argv = append([]string{"sudo", "-n"}, argv...)
	}
	fmt.Fprintf(os.Stderr, "demo: installing QEMU: %s\n", filepath.Base(argv[0]))
	run := func(args ...string) error {
		c := exec.CommandContext(ctx, args[0], args[1:]...)
		c.Stdout, c.Stderr = os.Stderr, os.Stderr
		c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return c.Run()
	}
	update := []string{"apt-get", "update", "-qq"}
	if argv[0] == "sudo" {
		update = append([]string{"sudo", "-n"}, update...)
	}
	if err := run(update...); err != nil {
		return fmt.Errorf("demo: apt-get update: %w", err)
	}
	if err := run(argv...); err != nil {
		return fmt.Errorf("demo: installing QEMU: %w", err)
	}
	return nil
}
