package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"lab/machine"
	"lab/vm"
)

func newExposeCommand() *cobra.Command {
	var name, as string
	var opts machine.ProvisionOptions
	cmd := &cobra.Command{
		Use:   "expose [--name VM] HOSTPROGRAM... [--as NAME]",
		Short: "Let the guest run host programs by name",
		Long: `expose puts each host program (a path, or a name looked up in PATH) on the relay's
allow list and a stub for it on the guest's PATH (/usr/bin/NAME, a small file with
the lab-host magic that names the program; the binfmt rule sends it to the
interpreter). The guest then runs it like any command, as WSL runs explorer.exe.
NAME is the program's base name, or --as NAME for a single program. An existing
guest file that is not a lab stub is never replaced. lab unexpose removes both.`,
		Example: `  lab expose xdg-open notify-send
  lab expose /usr/bin/env --as host-env`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			m, err := machine.Open(name)
			if err != nil {
				return err
			}
			defer m.Close()
			added, err := m.Expose(ctx, args, as, opts)
			for _, e := range added {
				fmt.Fprintf(cmd.OutOrStdout(), "exposed %s as %s\n", e.HostPath, e.Name)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", vm.DefaultName, "VM name")
	cmd.Flags().StringVar(&as, "as", "", "the guest's name for the program (one program only)")
	cmd.Flags().StringVar(&opts.Interpreter, "interpreter", "", "lab-interop binary for the guest (default: next to lab)")
	return cmd
}
