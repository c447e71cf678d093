package host

import (
	"os/exec"

	"lab/internal/sigdefault"
)

// Host programs start with every catchable signal at its default disposition and none
// blocked, as from a fresh shell (WSL starts Windows programs that way), whatever the daemon
// running the relay inherited (nohup ignores SIGHUP; a background job of a non-interactive
// shell ignores SIGINT and SIGQUIT): package sigdefault, which vm uses for QEMU too.

func unignoreSignals()                   { sigdefault.Unignore() }
func startUnblocked(cmd *exec.Cmd) error { return sigdefault.StartUnblocked(cmd) }
