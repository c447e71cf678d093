package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"lab/images"
	"lab/scenarios/bench"
)

func newBenchCommand() *cobra.Command {
	var opts bench.Options
	var jsonOut bool
	var chart, from string
	cmd := &cobra.Command{
		Use:   "bench [--json] [--breakdown] [--only boot|concurrent|vsock] [--chart FILE.svg|FILE.png]",
		Short: "Measure interop against its baselines, side by side, on a fresh VM",
		Long: `bench boots its own VM (name "bench"), provisions it and measures in one run:

  launch latency (p50, p99 over --runs runs) of a trivial program run through interop,
  next to the same program run natively in the guest and on the host, a guest->host
  SSH exec of it (a throwaway SSH server on a host loopback port) and lab exec;
  throughput of interop stdout and stdin next to raw guest<->host vsock and an SSH pipe;
  --concurrent launches at once (wall time, all correct, hostagent RSS);
  boot to first interop exec.

Guest-side figures are taken inside the guest by a probe program, so the SSH session
that starts them is not counted. Goals: launch <= 0.2x the SSH exec; pipe >= 0.8x raw
vsock. The probe and fixtures are built with the Go toolchain from sources embedded in
lab, so any directory will do. --chart writes a
bar chart (SVG or PNG by the name's extension): p50 and p99 bars, each figure's aim
as a red mark. --breakdown also runs the launches traced (lab trace's records of the
interpreter and the relay, merged on the guest's clock) and prints, phase by phase, where
an interop launch's time goes: the interpreter's exec, config and token reads, the vsock
connect, the handshake, the relay's authorisation and mapping, the host fork/exec, the
first output byte, the exit.`,
		Example: `  lab bench
  lab bench --runs 500 --json > bench.json --chart bench.svg
  lab bench --from bench.json --chart bench.png
  lab bench --only boot
  lab bench --only concurrent --concurrent 1000
  lab bench --only vsock
  lab bench --only boot --arch arm64   # an arm64 guest (under TCG on an amd64 host)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if chart != "" && !strings.HasSuffix(chart, ".svg") && !strings.HasSuffix(chart, ".png") {
				return &usageError{fmt.Errorf("bench: --chart writes SVG or PNG: name the file *.svg or *.png")}
			}
			if err := bench.CheckOnly(opts.Only); err != nil {
				return &usageError{err}
			}
			if err := checkDistro(opts.Distro); err != nil {
				return err
			}
			if _, err := images.NormalizeArch(opts.Arch); err != nil {
				return &usageError{fmt.Errorf("--arch: %w", err)}
			}
			if opts.Distro == images.DistroInitramfs {
				opts.Distro = ""
			}
			opts.Progress = os.Stderr
			var res *bench.Result
			var err error
			if from != "" {
				res, err = bench.ReadJSON(from)
			} else {
				res, err = bench.Run(cmd.Context(), opts)
			}
			if err != nil {
				return err
			}
			if jsonOut {
				err = res.WriteJSON(cmd.OutOrStdout())
			} else {
				err = res.WriteText(cmd.OutOrStdout())
			}
			if err != nil {
				return err
			}
			if chart != "" {
				f, err := os.Create(chart)
				if err != nil {
					return fmt.Errorf("bench: %w", err)
				}
				write := res.WriteSVG
				if strings.HasSuffix(chart, ".png") {
					write = res.WritePNG
				}
				if err := write(f); err != nil {
					f.Close()
					return err
				}
				return f.Close()
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&jsonOut, "json", false, "print the figures as JSON")
	f.StringVar(&chart, "chart", "", "write a bar chart of the figures and their aims to FILE.svg or FILE.png")
	f.StringVar(&from, "from", "", "report (and chart) the figures of an earlier --json run instead of measuring")
	f.BoolVar(&opts.Breakdown, "breakdown", false, "also trace launches and print where their time goes, phase by phase")
	f.StringVar(&opts.Name, "name", "bench", "name of the VM bench boots")
	f.StringVar(&opts.Accel, "accel", "auto", "accelerator: auto, kvm or tcg")
	f.StringVar(&opts.Vsock, "vsock", "auto", "vsock backend: auto, kernel or user")
	f.IntVar(&opts.Runs, "runs", 200, "launches per latency figure")
	f.Int64Var(&opts.Bytes, "bytes", 64<<20, "bytes per throughput figure")
	f.IntVar(&opts.Concurrent, "concurrent", 1000, "concurrent launches")
	f.StringVar(&opts.Only, "only", "", `measure only one figure: "boot" (boot to first interop exec with its phases, and re-provisioning), "concurrent" (--concurrent launches after a boot without the Windows side) or "vsock" (raw vsock both ways, --bytes each, after a boot without the Windows side)`)
	f.StringVar(&opts.Interpreter, "interpreter", "", "lab-interop binary for the guest (default: next to lab)")
	f.StringVar(&opts.Arch, "arch", images.DefaultArch(), "guest architecture: amd64 or arm64 (another than the host's runs under TCG; its boot aim is 15 s)")
	f.StringVar(&opts.Distro, "distro", images.DistroInitramfs, "guest image: initramfs, or debian (its boot aim is 15 s; also reports the image's clean build time and a fresh machine's disk use, and deletes the bench machine's disk after)")
	return cmd
}
