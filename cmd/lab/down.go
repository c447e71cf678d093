package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"lab/provision/labvm"
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
$XDG_DATA_HOME/lab/NAME/wine) is kept for the next lab up, and so is a Debian
machine's disk ($XDG_DATA_HOME/lab/NAME/disk.qcow2): lab up --distro debian
--name NAME boots it again with everything written in it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := downMachine(cmd.Context(), name, cmd.ErrOrStderr()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: down\n", name)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", vm.DefaultName, "VM name")
	return cmd
}

// downMachine stops the VM and its state, then the wineserver of its prefix (the prefix
// outlives the state dir: it is found first). A problem with the prefix is a line on
// errOut, not an error.
func downMachine(ctx context.Context, name string, errOut io.Writer) error {
	// The hostagent's wine task stops the prefix's wineserver, unless the hostagent was killed.
	prefix := ""
	if dir, err := vm.StateDirOf(name); err == nil {
		if in, err := labvm.Instance(dir); err == nil {
			prefix = labvm.PrefixOf(in)
		}
	}
	if err := vm.Down(ctx, name); err != nil {
		return err
	}
	if err := labvm.ShutdownWindows(ctx, prefix); err != nil {
		fmt.Fprintf(errOut, "lab: %s: stopping the Wine prefix %s: %v\n", name, prefix, err)
	}
	return nil
}
