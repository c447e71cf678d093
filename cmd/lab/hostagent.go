package main

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	labvm "lab/machine"
	"lab/vm"
)

// hostagentTasks are served for as long as each VM runs: the interop relay, on the
// VM's vsock (userspace backend listener, or kernel vsock checked against the guest CID),
// and the VM's Wine prefix kept warm (and shut down with the VM).
func hostagentTasks() []vm.Task {
	return []vm.Task{labvm.RelayTask(), labvm.WineTask()}
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
