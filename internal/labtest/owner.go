package labtest

import (
	"os"
	"strconv"
)

// EnvHostagentOwner is vm.EnvOwner (labtest cannot import vm: vm's own tests import
// labtest): the pid of the process whose exit ends every hostagent started under it.
const EnvHostagentOwner = "LAB_HOSTAGENT_OWNER"

// Every test binary that imports labtest names itself the owner of the hostagents its
// tests start, directly (vm.Up) or through lab up, unless a test process above it did
// (a test binary that re-executes itself as a hostagent or a helper keeps its parent's):
// a test killed by go test's timeout or by SIGKILL leaves no hostagent and QEMU behind.
func init() {
	if os.Getenv(EnvHostagentOwner) == "" {
		os.Setenv(EnvHostagentOwner, strconv.Itoa(os.Getpid()))
	}
}
