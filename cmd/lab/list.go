package main

import (
	"encoding/json"

	"github.com/spf13/cobra"

	"lab/machine"
)

func newListCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List every machine, running or kept, with its disk use",
		Long: `list shows every machine lab knows, as wsl --list --verbose does: those that run
(or whose state dir lab down has not cleaned up yet) and those lab down kept,
with what each one owns on disk:

  STATE    running, booting, broken, stopping, stopped (not cleaned up: lab down
           does), or kept (down; its data waits for the next lab up)
  WINDOWS  shared (the Windows side all machines share), isolated SIZE (a Wine
           prefix of its own, lab up --isolated-windows), none (--no-windows)
  DISK     the persistent disk overlay, if the machine has one
  TOTAL    everything it owns: state dir and data dir ($XDG_DATA_HOME/lab/NAME)

A last line shows the shared Windows side ($XDG_DATA_HOME/lab/windows): its size,
how many running machines use it, and whether its wineserver runs.
lab delete NAME removes a machine and everything it owns; lab image prune removes
cached images and templates nothing uses.`,
		Example: `  lab list
  lab list --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := machine.Machines(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(l)
			}
			printMachines(cmd.OutOrStdout(), l)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
