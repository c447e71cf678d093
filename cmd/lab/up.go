package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"lab/provision/labvm"
	"lab/vm"
)

func newUpCommand() *cobra.Command {
	var cfg vm.Config
	var shares []string
	var noProvision bool
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Boot a guest VM and wait until it runs commands",
		Long: `up builds the guest image if needed, boots it in QEMU under a supervising
hostagent process and waits until its SSH server runs commands.

--accel auto tries KVM and falls back to TCG; --vsock auto uses the kernel's
vhost-vsock when /dev/vhost-vsock opens, else lab's userspace backend.
--share HOST:GUEST[:ro] exports a host directory to the guest over 9p.
Unless --no-provision is given, up then provisions the guest (see lab provision):
the interpreter, its configuration and token, and the binfmt rules.
On failure nothing is left running and the error shows the console's last lines.`,
		Example: `  lab up
  lab up --name second --share $PWD:/mnt/work
  lab up --accel tcg --vsock user`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, s := range shares {
				sh, err := vm.ParseShare(s)
				if err != nil {
					return &usageError{err}
				}
				cfg.Shares = append(cfg.Shares, sh)
			}
			cfg.Progress = os.Stderr
			ctx := cmd.Context()
			in, err := vm.Up(ctx, cfg)
			if err != nil {
				return err
			}
			if !noProvision {
				if err := provisionInstance(ctx, in.StateDir); err != nil {
					return fmt.Errorf("%w (the VM is up: fix and rerun lab provision --name %s, or lab down --name %s)", err, in.Name, in.Name)
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: up (%s, %s vsock, CID %d); try: lab exec --name %s -- uname -r\n",
				in.Name, in.Accel, in.Vsock, in.CID, in.Name)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", vm.DefaultName, "VM name")
	f.StringVar(&cfg.Accel, "accel", "auto", "accelerator: auto, kvm or tcg")
	f.StringVar(&cfg.Vsock, "vsock", "auto", "vsock backend: auto, kernel or user")
	f.StringArrayVar(&shares, "share", nil, "share a host directory: HOST:GUEST[:ro] (repeatable)")
	f.IntVar(&cfg.MemoryMiB, "memory", vm.DefaultMemoryMiB, "guest memory in MiB")
	f.IntVar(&cfg.CPUs, "cpus", vm.DefaultCPUs, "guest CPUs")
	f.StringVar(&cfg.Kernel, "kernel", "", "boot this kernel (bzImage or vmlinux) instead of the packaged one")
	f.StringVar(&cfg.Modules, "modules", "", "the /lib/modules/VERSION directory matching --kernel")
	f.StringVar(&cfg.QEMU, "qemu", "qemu-system-x86_64", "QEMU system emulator")
	f.BoolVar(&noProvision, "no-provision", false, "boot only: do not install the interpreter and binfmt rules")
	f.DurationVar(&cfg.BootTimeout, "boot-timeout", vm.DefaultBootTimeout, "how long to wait for the guest's SSH")
	return cmd
}

// provisionInstance installs interop in a VM that is up, over its kept SSH connection.
func provisionInstance(ctx context.Context, stateDir string) error {
	c, err := vm.Connect(ctx, stateDir)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = labvm.Provision(ctx, c, stateDir, labvm.Options{Progress: os.Stderr})
	return err
}
