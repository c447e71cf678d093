package main

import (
	"context"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"lab/internal/shell"
	"lab/vm"
)

// execSignals are the signals lab exec forwards to the guest command.
var execSignals = map[os.Signal]ssh.Signal{
	syscall.SIGINT: ssh.SIGINT, syscall.SIGTERM: ssh.SIGTERM, syscall.SIGHUP: ssh.SIGHUP, syscall.SIGQUIT: ssh.SIGQUIT,
}

// execGiveUp is the number of forwarded signals after which lab exec stops waiting for a
// command that survives them, kills it and exits (as lab-interop does).
const execGiveUp = 3

func newExecCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "exec [--name VM] -- CMD [ARG...]",
		Short: "Run a command in the guest",
		Long: `exec runs CMD with its arguments in the guest (each argument passes as is;
use sh -c '...' for shell syntax) and exits with CMD's exit status (128+N when
signal N killed it). It goes over the hostagent's kept SSH connection to the guest.

When stdin, stdout and stderr are this process group's terminal, CMD runs on a
guest pty (as with ssh -t): the local terminal is put in raw mode (and restored
on exit), so ^C, ^Z and ^\ are keys the guest's terminal turns into signals, and
window size changes follow. Otherwise stdin, stdout and stderr pass through
separately.

Without a terminal, SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to lab exec are
delivered to CMD's process group, and lab exec waits for CMD's own exit status (a
command that traps SIGINT and exits 7 makes lab exec exit 7). On a terminal they
go as SSH signal requests, which the guest's sshd ignores for root logins (the
keys work). After three such signals lab exec stops waiting: it kills CMD and
exits 128+N for the last signal N.`,
		Example: `  lab exec -- uname -r
  echo hi | lab exec -- sh -c 'cat >/tmp/x'
  lab exec -- top          # on a terminal: full-screen, q or ^C ends it`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// From here on a signal is forwarded, not a reason to stop: main's context
			// (cancelled by SIGINT and SIGTERM) would kill the command.
			sigs := make(chan os.Signal, 8)
			for s := range execSignals {
				signal.Notify(sigs, s)
			}
			defer signal.Stop(sigs)
			c, err := vm.Connect(cmd.Context(), name)
			if err != nil {
				if cmd.Context().Err() != nil {
					return &exitError{130} // interrupted before the command started
				}
				return err
			}
			defer c.Close()
			ctx, kill := context.WithCancel(context.WithoutCancel(cmd.Context()))
			defer kill()

			opts := vm.ExecOptions{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
			if fd, ok := foregroundTerminal(); ok {
				restore, pty, err := rawTerminal(fd)
				if err != nil {
					return err
				}
				defer restore()
				opts.Pty = pty
			}
			fwd := make(chan ssh.Signal, 8)
			opts.Signals = fwd
			var last atomic.Int32 // the signal lab exec gave up on
			go func() {
				n := 0
				for s := range sigs {
					n++
					if n >= execGiveUp {
						last.Store(int32(s.(syscall.Signal)))
						kill()
						return
					}
					fwd <- execSignals[s]
				}
			}()
			code, err := c.Exec(ctx, shell.Join(args), opts)
			if err != nil {
				if n := last.Load(); n != 0 {
					return &exitError{128 + int(n)}
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

// foregroundTerminal reports whether stdin, stdout and stderr are one terminal whose
// foreground process group is ours (a background lab exec must not touch its modes).
func foregroundTerminal() (int, bool) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) || !term.IsTerminal(int(os.Stdout.Fd())) || !term.IsTerminal(int(os.Stderr.Fd())) {
		return 0, false
	}
	pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return fd, err == nil && pgrp == unix.Getpgrp()
}

// rawTerminal puts the terminal fd in raw mode and returns how to restore it and the
// guest pty to ask for, of the same size and TERM, following SIGWINCH.
func rawTerminal(fd int) (restore func(), pty *vm.PtyOptions, err error) {
	w, h, err := term.GetSize(fd)
	if err != nil || w == 0 || h == 0 {
		w, h = 80, 24
	}
	old, err := term.MakeRaw(fd)
	if err != nil {
		return nil, nil, err
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	resize := make(chan vm.WindowSize, 1)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-winch:
			case <-stop:
				return
			}
			if w, h, err := term.GetSize(fd); err == nil {
				select {
				case <-resize: // only the latest size matters
				default:
				}
				resize <- vm.WindowSize{Width: w, Height: h}
			}
		}
	}()
	restore = func() {
		signal.Stop(winch)
		close(stop)
		term.Restore(fd, old)
	}
	pty = &vm.PtyOptions{Term: os.Getenv("TERM"), Width: w, Height: h,
		Modes: ssh.TerminalModes{ssh.ECHO: 1}, Resize: resize}
	return restore, pty, nil
}
