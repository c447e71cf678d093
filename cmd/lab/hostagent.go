package main

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"lab/machine"
	"lab/vm"
)

// hostagentTasks are served for as long as each VM runs: the machine's (the interop
// relay on the VM's vsock, the Wine prefix kept warm).
func hostagentTasks() []vm.Task {
	return machine.Tasks()
}

func newHostagentCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:    "hostagent --state-dir DIR",
		Short:  "Supervise one VM (started by lab up)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return &usageError{errMissingStateDir}
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			h := &vm.Hostagent{StateDir: dir, Tasks: hostagentTasks(), Logger: log}
			return h.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&dir, "state-dir", "", "the VM's state directory")
	return cmd
}

type constError string

func (e constError) Error() string { return string(e) }

const errMissingStateDir = constError("hostagent: --state-dir is required")
