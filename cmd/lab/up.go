package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"lab/images"
	"lab/provision"
	"lab/provision/labvm"
	"lab/vm"
	"lab/wineprefix"
)

func newUpCommand() *cobra.Command {
	var s upSettings
	var file string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Boot a guest VM and wait until it runs commands",
		Long: `up builds the guest image if needed, boots it in QEMU under a supervising
hostagent process and waits until its SSH server runs commands.

--accel auto tries KVM and falls back to TCG; --vsock auto uses the kernel's
vhost-vsock when /dev/vhost-vsock opens, else lab's userspace backend.
--share HOST:GUEST[:ro] exports a host directory to the guest over 9p. Every VM
also gets a writable scratch share of its own at /mnt/lab (in its state directory,
removed by lab down; --no-scratch: none), where lab run builds its fixtures; a
--share mounted at /mnt/lab takes its place.
Unless --no-provision is given, up then provisions the guest (see lab provision):
the interpreter, its configuration and token, and the binfmt rules.
When Wine is installed, the VM gets the Windows personality (--no-windows turns it
off): a Wine prefix of its own in $XDG_DATA_HOME/lab/NAME/wine (kept by lab down,
as WSL keeps C:), whose drive_c the guest sees read-write at /mnt/c, with
/mnt/c/Windows/System32 appended to login shells' PATH (--no-windows-path).
The guest gets WSL's names (binfmt rule WSLInterop, wslpath, WSL_DISTRO_NAME,
WSL_INTEROP) unless --no-wsl-names.
-f FILE reads the machine from a lab file (YAML: name, memory, cpus, shares, expose,
windows, env, formats; see lab help labfile); flags given as well override it, and
--share adds to its shares.
--distro picks the guest image: initramfs (the default: fast, in RAM, nothing kept
but the Wine prefix) or debian (Debian 12 with systemd, bash, apt, sudo and a user
"lab"; see lab image build --help). A Debian machine boots on a disk of its own,
a copy-on-write overlay of the cached image in $XDG_DATA_HOME/lab/NAME/disk.qcow2
(machine.json beside it says what it was made from): lab down keeps it, the next
lab up --name NAME boots it again with everything written in it, and two machines
never share one. lab status shows its size.
On failure nothing is left running and the error shows the console's last lines.`,
		Example: `  lab up
  lab up --distro debian --name deb   # Debian 12 + systemd, persistent disk
  lab up -f lab.yaml
  lab up --name second --share $PWD:/mnt/work
  lab up --accel tcg --vsock user`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file != "" {
				lf, err := readLabFile(file)
				if err != nil {
					return &usageError{err}
				}
				if err := applyLabFile(lf, cmd.Flags(), &s); err != nil {
					return &usageError{err}
				}
			}
			in, err := upMachine(cmd.Context(), s, os.Stderr)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: up (%s, %s vsock, CID %d); try: lab exec --name %s -- uname -r\n",
				in.Name, in.Accel, in.Vsock, in.CID, in.Name)
			return nil
		},
	}
	f := cmd.Flags()
	cfg := &s.cfg
	f.StringVarP(&file, "file", "f", "", "read the machine from a lab file (YAML)")
	f.StringVar(&cfg.Name, "name", vm.DefaultName, "VM name")
	f.StringVar(&cfg.Accel, "accel", "auto", "accelerator: auto, kvm or tcg")
	f.StringVar(&cfg.Vsock, "vsock", "auto", "vsock backend: auto, kernel or user")
	f.StringArrayVar(&s.shares, "share", nil, "share a host directory: HOST:GUEST[:ro] (repeatable)")
	f.IntVar(&cfg.MemoryMiB, "memory", vm.DefaultMemoryMiB, "guest memory in MiB")
	f.IntVar(&cfg.CPUs, "cpus", vm.DefaultCPUs, "guest CPUs")
	f.StringVar(&cfg.Kernel, "kernel", "", "boot this kernel (bzImage or vmlinux) instead of the packaged one")
	f.StringVar(&cfg.Modules, "modules", "", "the /lib/modules/VERSION directory matching --kernel")
	f.StringVar(&cfg.QEMU, "qemu", "qemu-system-x86_64", "QEMU system emulator")
	f.StringVar(&cfg.Distro, "distro", images.DistroInitramfs, distroUsage)
	f.BoolVar(&s.noProvision, "no-provision", false, "boot only: do not install the interpreter and binfmt rules")
	f.BoolVar(&s.noWindows, "no-windows", false, "no Windows personality: no Wine prefix, no /mnt/c")
	f.BoolVar(&s.noScratch, "no-scratch", false, "no lab-owned scratch share at /mnt/lab (lab run then needs a writable --share)")
	f.BoolVar(&s.noWinPath, "no-windows-path", false, "do not append /mnt/c/Windows/System32 to the guest's PATH")
	f.BoolVar(&s.noWSLNames, "no-wsl-names", false, "only lab's names in the guest: binfmt rule lab-pe, no wslpath, no WSL_* variables")
	f.DurationVar(&cfg.BootTimeout, "boot-timeout", vm.DefaultBootTimeout, "how long to wait for the guest's SSH")
	return cmd
}

// mountsAt reports whether a share is mounted at guestPath.
func mountsAt(shares []vm.Share, guestPath string) bool {
	for _, sh := range shares {
		if filepath.Clean(sh.GuestPath) == guestPath {
			return true
		}
	}
	return false
}

// provisionInstance installs interop in a VM that is up, over its kept SSH connection.
// nameOrDir is a VM name or its state dir.
func provisionInstance(ctx context.Context, nameOrDir string, opts labvm.Options) error {
	c, err := vm.Connect(ctx, nameOrDir)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = labvm.Provision(ctx, c, nameOrDir, opts)
	return err
}

// windowsShare makes the VM's Wine prefix (kept across lab down) and returns the share
// of its drive_c at /mnt/c; nil when Wine is not installed (the VM then runs without the
// Windows personality, and lab status says so).
func windowsShare(ctx context.Context, name string, progress io.Writer) (*vm.Share, error) {
	if name == "" {
		name = vm.DefaultName
	}
	dir, err := labvm.PrefixDir(name)
	if err != nil {
		return nil, err
	}
	_, sh, err := labvm.EnsureWindows(ctx, dir, progress)
	if errors.Is(err, wineprefix.ErrNoWine) {
		fmt.Fprintln(progress, "lab: no Windows personality: "+err.Error())
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w (or run lab up --no-windows)", err)
	}
	return &sh, nil
}

// upMachine boots and provisions one VM as lab up does (s already holds the lab file's
// settings and the flags); progress gets the progress lines. On failure nothing is left
// running.
func upMachine(ctx context.Context, s upSettings, progress io.Writer) (*vm.Instance, error) {
	cfg, shares := &s.cfg, s.shares
	cfg.Shares = slices.Clone(cfg.Shares) // parallel machines share the lab file's list
	noProvision, noWindows, noWindowsPath, noScratch := s.noProvision, s.noWindows, s.noWinPath, s.noScratch
	for _, s := range shares {
		sh, err := vm.ParseShare(s)
		if err != nil {
			return nil, &usageError{err}
		}
		cfg.Shares = append(cfg.Shares, sh)
	}
	if !noScratch && !mountsAt(cfg.Shares, vm.DefaultScratch) {
		cfg.Scratch = vm.DefaultScratch
	}
	cfg.Progress = progress
	if err := checkDistro(cfg.Distro); err != nil {
		return nil, err
	}
	if cfg.Distro == images.DistroDebian && cfg.Disk == "" {
		name := cfg.Name
		if name == "" {
			name = vm.DefaultName
		}
		dir, err := labvm.DataDir(name)
		if err != nil {
			return nil, err
		}
		cfg.Disk = filepath.Join(dir, "disk.qcow2")
	}
	if !noProvision {
		// Fail before booting rather than after: the default image's guest is the host's architecture.
		if _, err := provision.FindInterpreter(runtime.GOARCH); err != nil {
			return nil, fmt.Errorf("%w (or boot without interop: lab up --no-provision)", err)
		}
	}
	if !noWindows {
		sh, err := windowsShare(ctx, cfg.Name, progress)
		if err != nil {
			return nil, err
		}
		if sh != nil {
			cfg.Shares = append(cfg.Shares, *sh)
		}
	}
	in, err := vm.Up(ctx, *cfg)
	if err != nil {
		return nil, err
	}
	if !noProvision {
		if err := provisionInstance(ctx, in.StateDir, labvm.Options{NoWindowsPath: noWindowsPath, NoWSLNames: s.noWSLNames, Progress: progress}); err != nil {
			// A failed up leaves nothing running.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if derr := vm.Down(dctx, in.StateDir); derr != nil {
				return nil, fmt.Errorf("%w; and stopping the VM failed: %v (run lab down --name %s)", err, derr, in.Name)
			}
			return nil, fmt.Errorf("%w (the VM was stopped)", err)
		}
	}
	return in, nil
}
