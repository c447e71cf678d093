package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/spf13/cobra"

	"lab/images"
	"lab/machine"
	"lab/vm"
)

func newUpCommand() *cobra.Command {
	var s upSettings
	var file string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Boot a guest VM and wait until it runs commands",
		Long: `up builds the guest image if needed, boots it in QEMU under a supervising
hostagent process and waits until its SSH server runs commands.

--arch picks the guest's architecture: amd64 or arm64, by default the host's. An
arm64 guest boots QEMU's virt machine (qemu-system-aarch64); an architecture other
than the host's always runs under TCG, several times slower. Its kernel and userland
come from this host's apt sources all the same, and the interpreter is
lab-interop-ARCH next to lab (make build makes both).
--accel auto tries KVM and falls back to TCG; --vsock auto uses the kernel's
vhost-vsock when /dev/vhost-vsock opens, else lab's userspace backend.
--share HOST:GUEST[:ro] exports a host directory to the guest over 9p. Every VM
also gets a writable scratch share of its own at /mnt/lab (in its state directory,
removed by lab down; --no-scratch: none), where lab run builds its fixtures; a
--share mounted at /mnt/lab takes its place.
Unless --no-provision is given, up then provisions the guest (see lab provision):
the interpreter, its configuration and token, and the binfmt rules.
When Wine is installed, the VM gets the Windows personality (--no-windows turns it
off): the Wine prefix all machines share, $XDG_DATA_HOME/lab/windows (one C: per
user, as every WSL distribution sees the same C:; one wineserver, kept while any
machine runs), whose drive_c the guest sees read-write at /mnt/c, with
/mnt/c/Windows/System32 appended to login shells' PATH (--no-windows-path).
--isolated-windows gives the machine a prefix of its own instead, in
$XDG_DATA_HOME/lab/NAME/wine (695 MB; kept by lab down, removed by lab delete).
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
  lab up --accel tcg --vsock user
  lab up --name arm --arch arm64`,
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
			m, err := upMachine(cmd.Context(), s, os.Stderr)
			if err != nil {
				return err
			}
			m.Close()
			in := m.Instance
			fmt.Fprintf(cmd.OutOrStdout(), "%s: up (%s, %s, %s vsock, CID %d); try: lab exec --name %s -- uname -r\n",
				in.Name, in.Arch, in.Accel, in.Vsock, in.CID, in.Name)
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
	f.StringVar(&cfg.Arch, "arch", images.DefaultArch(), "guest architecture: amd64 or arm64")
	f.StringVar(&cfg.QEMU, "qemu", "", "QEMU system emulator (default qemu-system-x86_64, or qemu-system-aarch64 for --arch arm64)")
	f.StringVar(&cfg.Distro, "distro", images.DistroInitramfs, distroUsage)
	f.BoolVar(&s.noProvision, "no-provision", false, "boot only: do not install the interpreter and binfmt rules")
	f.BoolVar(&s.noWindows, "no-windows", false, "no Windows personality: no Wine prefix, no /mnt/c")
	f.BoolVar(&s.noScratch, "no-scratch", false, "no lab-owned scratch share at /mnt/lab (lab run then needs a writable --share)")
	f.BoolVar(&s.isolatedWindows, "isolated-windows", false, "a Wine prefix of the machine's own ($XDG_DATA_HOME/lab/NAME/wine) instead of the shared one")
	f.BoolVar(&s.noWinPath, "no-windows-path", false, "do not append /mnt/c/Windows/System32 to the guest's PATH")
	f.BoolVar(&s.noWSLNames, "no-wsl-names", false, "only lab's names in the guest: binfmt rule lab-pe, no wslpath, no WSL_* variables")
	f.DurationVar(&cfg.BootTimeout, "boot-timeout", 0, fmt.Sprintf("how long to wait for the guest's SSH (default %v; %v for --distro debian)", vm.DefaultBootTimeout, vm.DefaultDiskBootTimeout))
	return cmd
}

// upMachine boots and provisions one machine as lab up does (s already holds the lab
// file's settings and the flags); progress gets the progress lines. On failure nothing
// is left running. The machine's guest connection is open: Close it.
func upMachine(ctx context.Context, s upSettings, progress io.Writer) (*machine.Machine, error) {
	opts := machine.Options{
		VM:              s.cfg,
		NoScratch:       s.noScratch,
		NoWindows:       s.noWindows,
		IsolatedWindows: s.isolatedWindows,
		NoProvision:     s.noProvision,
		Provision:       machine.ProvisionOptions{NoWindowsPath: s.noWinPath, NoWSLNames: s.noWSLNames},
		Progress:        progress,
	}
	opts.VM.Shares = slices.Clone(opts.VM.Shares) // parallel machines share the lab file's list
	for _, s := range s.shares {
		sh, err := vm.ParseShare(s)
		if err != nil {
			return nil, &usageError{err}
		}
		opts.VM.Shares = append(opts.VM.Shares, sh)
	}
	if _, err := images.NormalizeArch(opts.VM.Arch); err != nil {
		return nil, &usageError{fmt.Errorf("--arch: %w", err)}
	}
	if err := checkDistro(opts.VM.Distro); err != nil {
		return nil, err
	}
	m, err := machine.Up(ctx, opts)
	if errors.Is(err, machine.ErrReservedName) {
		return nil, &usageError{err}
	}
	return m, err
}
