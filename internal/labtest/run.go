package labtest

import (
	"bytes"
	"errors"
	"os/exec"
	"testing"
)

// Output runs cmd and returns its stdout, stderr and exit status. A status other than 0
// is an answer, not a failure; a command that could not run fails tb.
func Output(tb testing.TB, cmd *exec.Cmd) (stdout, stderr string, code int) {
	tb.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		tb.Fatalf("%s %v: %v", cmd.Path, cmd.Args[1:], err)
	}
	return out.String(), errb.String(), code
}
