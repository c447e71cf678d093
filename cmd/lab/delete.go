package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newDeleteCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Remove a machine and everything it owns",
		Long: `delete removes a machine for good, as wsl --unregister removes a distribution:
its state dir, and its data dir ($XDG_DATA_HOME/lab/NAME): the disk overlay, the
machine record and its own Wine prefix (lab up --isolated-windows). lab down
only stops a machine and keeps its data (as wsl --terminate).

A running machine is refused unless --force, which stops it first. The shared
Windows side ($XDG_DATA_HOME/lab/windows) is not a machine's and stays.`,
		Example: `  lab delete old-test
  lab delete --force ci`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			freed, err := deleteMachine(cmd.Context(), args[0], force, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: deleted (%s freed)\n", args[0], humanBytes(freed))
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "stop a running machine first")
	return cmd
}
