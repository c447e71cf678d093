//go:build windows

// Command labrun runs one program with an exact Windows command line: lab's relay uses it
// when Wine's own quoting of `wine PROGRAM ARGS...` would differ from WSL's (an argument with
// '"', CR or LF but no space or tab). It takes the program's Windows path from
// LABRUN_PROGRAM and the command line from LABRUN_CMDLINE, removes both from the
// environment, runs the program with the same standard handles, and exits with its exit code.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

func main() {
	prog, line := os.Getenv("LABRUN_PROGRAM"), os.Getenv("LABRUN_CMDLINE")
	if prog == "" {
		fmt.Fprintln(os.Stderr, "labrun.exe: LABRUN_PROGRAM is not set (lab's relay runs this launcher; it is not a command)")
		os.Exit(2)
	}
	os.Unsetenv("LABRUN_PROGRAM")
	os.Unsetenv("LABRUN_CMDLINE")
	// Ctrl-C reaches the program itself (Wine delivers it to every process of the group);
	// the launcher waits for the program's answer instead of exiting first.
	signal.Notify(make(chan os.Signal, 1), os.Interrupt)
	cmd := &exec.Cmd{
		Path:        prog,
		Stdin:       os.Stdin,
		Stdout:      os.Stdout,
		Stderr:      os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{CmdLine: line},
	}
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		os.Exit(ee.ExitCode())
	case err != nil:
		fmt.Fprintf(os.Stderr, "labrun.exe: %v\n", err)
		os.Exit(1)
	}
}
