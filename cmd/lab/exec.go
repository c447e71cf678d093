package main

import (
	"os"

	"github.com/spf13/cobra"

	"lab/vm"
)

func newExecCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "exec [--name VM] -- CMD [ARG...]",
		Short: "Run a command in the guest",
		Long: `exec runs CMD with its arguments in the guest (each argument passes as is;
use sh -c '...' for shell syntax). stdin, stdout and stderr pass through
separately and lab exits with CMD's exit status (128+N when a signal N killed it;
130 when lab exec was interrupted, which kills CMD).
It goes over the hostagent's kept SSH connection to the guest.`,
		Example: `  lab exec -- uname -r
  echo hi | lab exec -- sh -c 'cat >/tmp/x'`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := vm.Connect(ctx, name)
			if err != nil {
				return err
			}
			defer c.Close()
			code, err := c.Run(ctx, vm.ShellQuote(args), os.Stdin, os.Stdout, os.Stderr)
			if err != nil {
				if ctx.Err() != nil {
					// Interrupted: the guest command was killed; exit as a shell would.
					return &exitError{130}
				}
				return err
			}
			if code != 0 {
				return &exitError{code}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", vm.DefaultName, "VM name")
	cmd.Flags().SetInterspersed(false)
	return cmd
}
