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
		Short: "Stop a VM and remove its state (its data is kept: lab delete removes it)",
		Long: `down asks the guest to power off (ACPI), then tells QEMU to quit, then kills
it, each after a grace period, stops the hostagent and removes the VM's state
directory. It also cleans up after a QEMU that was killed or crashed. The Windows
side's wineserver stops once no running machine uses it (the shared prefix's
stays for the others). What the machine keeps, as wsl --terminate keeps a
distribution, waits for the next lab up: C: (the shared $XDG_DATA_HOME/lab/windows,
or its own $XDG_DATA_HOME/lab/NAME/wine) and its data dir, with a Debian machine's disk
($XDG_DATA_HOME/lab/NAME/disk.qcow2: lab up --distro debian --name NAME boots it
again with everything written in it). lab list shows kept
machines; lab delete NAME removes one (as wsl --unregister).`,
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
