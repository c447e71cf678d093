package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"lab/machine"
	"lab/vm"
)

func newInteropCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "interop on|off [--name VM]",
		Short: "Enable or disable the guest's binfmt rules",
		Long: `interop off disables lab's binfmt_misc rules in the guest, as
'echo 0 > /proc/sys/fs/binfmt_misc/WSLInterop' does in WSL: foreign files then fail
with "Exec format error". interop on enables them again. The state lasts until the
guest reboots or is provisioned again (provisioning enables the rules).`,
		Example: `  lab interop off
  lab interop on --name second`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"on", "off"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "on" && args[0] != "off" {
				return &usageError{fmt.Errorf("interop: want on or off, got %q", args[0])}
			}
			ctx := cmd.Context()
			m, err := machine.Open(name)
			if err != nil {
				return err
			}
			defer m.Close()
			if err := m.Interop(ctx, args[0] == "on"); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: interop %s\n", name, args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", vm.DefaultName, "VM name")
	return cmd
}
