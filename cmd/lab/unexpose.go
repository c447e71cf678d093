package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"lab/machine"
	"lab/vm"
)

func newUnexposeCommand() *cobra.Command {
	var name string
	var opts machine.ProvisionOptions
	cmd := &cobra.Command{
		Use:   "unexpose [--name VM] NAME...",
		Short: "Remove exposed host programs (allow list entry and guest stub)",
		Long: `unexpose removes each named command (its guest name, or the host program's path or
base name) from the relay's allow list and its stub from the guest.`,
		Example: `  lab unexpose notify-send`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			m, err := machine.Open(name)
			if err != nil {
				return err
			}
			defer m.Close()
			removed, err := m.Unexpose(ctx, args, opts)
			for _, e := range removed {
				fmt.Fprintf(cmd.OutOrStdout(), "unexposed %s (%s)\n", e.Name, e.HostPath)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", vm.DefaultName, "VM name")
	cmd.Flags().StringVar(&opts.Interpreter, "interpreter", "", "lab-interop binary for the guest (default: next to lab)")
	return cmd
}
