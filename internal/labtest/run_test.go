package labtest

import (
	"os/exec"
	"testing"
)

// TestOutput: a command's streams and a non-zero status come back; the status is not a failure.
func TestOutput(t *testing.T) {
	out, errs, code := Output(t, exec.Command("sh", "-c", "echo out; echo err >&2; exit 3"))
	if out != "out\n" || errs != "err\n" || code != 3 {
		t.Errorf("Output = %q, %q, %d; want \"out\\n\", \"err\\n\", 3", out, errs, code)
	}
}
