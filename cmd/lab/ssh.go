package main

import (
	"errors"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"golang.org/x/term"

	"lab/internal/shell"
	"lab/vm"
)

func newSSHCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "ssh [--name VM] [-- CMD...]",
		Short: "Open an interactive shell in the guest",
		Long: `ssh opens a shell (or runs CMD) in the guest with a terminal when stdin is one,
over the hostagent's kept SSH connection. To use OpenSSH instead:
ssh -F ~/.local/state/lab/NAME/ssh_config lab`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := vm.Connect(ctx, name)
			if err != nil {
				return err
			}
			defer c.Close()
			s, err := c.SSH().NewSession()
			if err != nil {
				return err
			}
			defer s.Close()
			s.Stdout, s.Stderr = os.Stdout, os.Stderr
			// Not s.Stdin: Session.Wait would then wait for a key press after the shell exits.
			stdin, err := s.StdinPipe()
			if err != nil {
				return err
			}
			fd := int(os.Stdin.Fd())
			if term.IsTerminal(fd) {
				w, h, err := term.GetSize(fd)
				if err != nil {
					w, h = 80, 24
				}
				termName := os.Getenv("TERM")
				if termName == "" {
					termName = "xterm"
				}
				if err := s.RequestPty(termName, h, w, ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
					return err
				}
				old, err := term.MakeRaw(fd)
				if err != nil {
					return err
				}
				defer term.Restore(fd, old)
				winch := make(chan os.Signal, 1)
				signal.Notify(winch, syscall.SIGWINCH)
				defer signal.Stop(winch)
				go func() {
					for range winch {
						if w, h, err := term.GetSize(fd); err == nil {
							s.WindowChange(h, w)
						}
					}
				}()
			}
			if len(args) > 0 {
				err = s.Start(shell.Join(args))
			} else {
				err = s.Shell()
			}
			if err != nil {
				return err
			}
			// After the shell or command started: dropbear closes a session whose stdin ends first.
			go func() {
				io.Copy(stdin, os.Stdin)
				stdin.Close()
			}()
			done := make(chan error, 1)
			go func() { done <- s.Wait() }()
			select {
			case err = <-done:
			case <-ctx.Done():
				return ctx.Err()
			}
			if err == nil {
				return nil
			}
			var ee *ssh.ExitError
			if errors.As(err, &ee) {
				return &exitError{ee.ExitStatus()}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", vm.DefaultName, "VM name")
	cmd.Flags().SetInterspersed(false)
	return cmd
}
