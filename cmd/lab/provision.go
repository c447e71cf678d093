package main

import (
	"github.com/spf13/cobra"

	"lab/machine"
	"lab/vm"
)

func newProvisionCommand() *cobra.Command {
	var name string
	var opts machine.ProvisionOptions
	cmd := &cobra.Command{
		Use:   "provision [--name VM]",
		Short: "Install the interop interpreter, binfmt rules and config in the guest (idempotent)",
		Long: `provision brings a running guest to the state interop needs, over the VM's kept
SSH connection, and changes only what differs:

  - the static interpreter (lab-interop, built for the guest's architecture) at
    /usr/local/lib/lab/interop, uploaded to a temporary file and renamed into place,
    and the links /usr/bin/wslpath and /usr/bin/labpath;
  - /etc/lab/interop.conf (relay address, token file, shares) and the VM's token
    (/etc/lab/token, 0600 root; the host copy is in the VM's state directory);
  - binfmt_misc mounted, the rules WSLInterop (magic MZ, flags POF: WSL's own
    registration with lab's interpreter) and lab-host (exposed-command stubs)
    registered, and persisted in /etc/binfmt.d/lab.conf where the guest runs systemd;
  - WSL_DISTRO_NAME (the VM's name) and WSL_INTEROP for login shells
    (/etc/profile.d/lab-wsl-env.sh) and SSH commands (sshd's SetEnv);
  - the guest's /etc/wsl.conf is read as WSL reads it: [interop] enabled=false
    registers the rules disabled (foreign files: "Exec format error") and sets no
    WSL_INTEROP; [interop] appendWindowsPath=false adds no Windows directories to PATH;
    lab's own [lab] cwdWarning=true makes the relay print its "not in a shared
    folder" line on the program's stderr;
  - --no-wsl-names: lab's names only (rule lab-pe, no wslpath, no WSL_* variables);
    the choice is kept for later provisioning until --wsl-names;
  - the VM's shares mounted, and a stub on the PATH for each exposed host command;
  - with the Windows personality (/mnt/c, see lab up): the drive mapping C: = /mnt/c
    for labpath and /etc/profile.d/lab-windows-path.sh, which appends
    /mnt/c/Windows/System32 and /mnt/c/Windows to login shells' PATH as WSL's
    appendWindowsPath does (--no-windows-path: off).

Each rule is then read back from /proc/sys/fs/binfmt_misc; a difference fails with
the reason. Running it again prints "nothing changed". A replaced interpreter
re-registers the rules (flag F holds the old file open).`,
		Example: `  lab provision
  lab provision --name second --interpreter bin/lab-interop`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Progress = cmd.OutOrStdout()
			m, err := machine.Open(name)
			if err != nil {
				return err
			}
			defer m.Close()
			_, err = m.Provision(cmd.Context(), opts)
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", vm.DefaultName, "VM name")
	cmd.Flags().BoolVar(&opts.NoWSLNames, "no-wsl-names", false, "only lab's names: binfmt rule lab-pe, no wslpath, no WSL_* variables (kept for later provisioning)")
	cmd.Flags().BoolVar(&opts.WSLNames, "wsl-names", false, "WSL's names again after --no-wsl-names (the default)")
	cmd.Flags().BoolVar(&opts.NoWindowsPath, "no-windows-path", false, "do not append /mnt/c/Windows/System32 to the guest's PATH (and remove it if an earlier run did)")
	cmd.Flags().StringVar(&opts.Interpreter, "interpreter", "", "lab-interop binary for the guest (default: next to lab, as make build puts it)")
	return cmd
}
