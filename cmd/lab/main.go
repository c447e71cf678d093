// Command lab reproduces Windows Subsystem for Linux interop on a stock Linux host:
// it builds and boots a QEMU guest, installs a binfmt_misc interpreter in it, and runs
// a relay on the host so that foreign executables started in the guest run on the host.
//
// Exit status: 0 success; 1 an error (one line on stderr says what to do); 2 a usage
// error; commands that run something (lab exec, lab run) pass its status through as
// documented in their --help.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time by the Makefile (-X main.version=...).
var version = "dev"

// exitError carries a specific exit status out of a command (lab exec, lab run).
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// usageError marks errors in the command line itself (exit status 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func newApp() *cobra.Command {
	var logLevel string
	root := &cobra.Command{
		Use:   "lab",
		Short: "WSL-style interop between a QEMU guest and this Linux host",
		Long: `lab boots a small Linux guest in QEMU, installs a binfmt_misc interpreter in it
and runs a relay on the host, so that foreign executables started in the guest
run on the host with their stdin, stdout, stderr, terminal, signals and exit
status intact, as Windows programs do from WSL.

Exit status: 0 on success, 1 on error, 2 on a usage error; 'lab exec' and
'lab run' document their own.`,
		Example: `  lab image build          # build the default guest image (cached)
  lab up                   # boot the "default" VM
  lab exec -- uname -r     # run a command in the guest
  lab down`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return &usageError{fmt.Errorf("--log-level: %w", err)}
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})))
			return nil
		},
	}
	root.PersistentFlags().StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn or error")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &usageError{err} })
	root.AddCommand(
		newVersionCommand(),
		newUpCommand(), newDownCommand(), newListCommand(), newDeleteCommand(), newStatusCommand(), newSSHCommand(), newExecCommand(), newTraceCommand(), newHostagentCommand(),
		newImageCommand(),
		newRelayCommand(),
		newProvisionCommand(), newInteropCommand(), newExposeCommand(), newUnexposeCommand(), newRunCommand(), newDemoCommand(), newBenchCommand(),
		newReportCommand(), newScenariosHelpTopic(), newLabfileHelpTopic(),
	)
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print lab's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "lab %s\n", version)
			return nil
		},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newApp().ExecuteContext(ctx)
	stop()
	os.Exit(exitCode(err))
}

// exitCode prints err (if any) and maps it to the documented exit status.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintln(os.Stderr, "lab:", err)
	var ue *usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		return 2
	}
	return 1
}

// isCobraUsage recognises the command-line errors cobra itself returns (unknown commands,
// wrong argument counts), which carry no type to test.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command ", "accepts ", "requires at least ", "requires at most ", "requires exactly ", "invalid argument "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}
