package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"lab/machine"
	"lab/vm"
)

func newDownCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop a VM and remove its state",
		Long: `down asks the guest to power off (ACPI), then tells QEMU to quit, then kills
it, each after a grace period, stops the hostagent and removes the VM's state
directory. It also cleans up after a QEMU that was killed or crashed, and stops
the wineserver of the VM's Wine prefix; the prefix itself (C: of the VM, in
$XDG_DATA_HOME/lab/NAME/wine) is kept for the next lab up.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := machine.Down(cmd.Context(), name, cmd.ErrOrStderr()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: down\n", name)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", vm.DefaultName, "VM name")
	return cmd
}
