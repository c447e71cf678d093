package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newDeleteCommand() *cobra.Command {
	var force bool
	var name string
	cmd := &cobra.Command{
		Use:   "delete NAME | --name NAME",
		Short: "Remove a machine and everything it owns",
		Long: `delete removes a machine for good, as wsl --unregister removes a distribution:
its state dir, and its data dir ($XDG_DATA_HOME/lab/NAME): the disk overlay, the
machine record and its own Wine prefix (lab up --isolated-windows). lab down
only stops a machine and keeps its data (as wsl --terminate).

A running machine is refused unless --force, which stops it first. The shared
Windows side ($XDG_DATA_HOME/lab/windows) is not a machine's and stays.

The name has no default (deleting is for good); --name NAME, as the other
commands take it, is the same as NAME.`,
		Example: `  lab delete old-test
  lab delete --force ci
  lab delete --name ci`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 1 && name != "" && args[0] != name:
				return &usageError{fmt.Errorf("delete: two names, %q and --name %q: give one", args[0], name)}
			case len(args) == 1:
				name = args[0]
			case name == "":
				return &usageError{fmt.Errorf("delete: which machine? lab delete NAME (lab list shows every machine)")}
			}
			freed, err := deleteMachine(cmd.Context(), name, force, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: deleted (%s freed)\n", name, humanBytes(freed))
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "stop a running machine first")
	cmd.Flags().StringVar(&name, "name", "", "the machine to delete (the same as NAME)")
	return cmd
}
