// Command lab-interop runs inside the guest. It is one static binary
// (CGO_ENABLED=0) with two names, chosen by the basename of argv[0]:
//
//   - installed as the binfmt_misc interpreter (any other name), the
//     kernel runs it as `lab-interop /full/path argv0 args...` (flag P) and
//     it runs the program on the host through the relay (lab/guest.Main);
//   - as `labpath` (a symlink), it translates paths between guest and host
//     like wslpath (lab/guest.LabpathMain).
package main

import (
	"os"
	"path/filepath"
	"runtime"

	"lab/guest"
)

func main() {
	// One P: the interpreter only moves bytes between a socket and stdio,
	// and with more Ps every hand-off between its goroutines wakes an idle
	// thread to spin (measured: a quarter fewer context switches per
	// launch). Blocking syscalls still get their own threads. GOMAXPROCS
	// in the environment wins.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	if filepath.Base(os.Args[0]) == "labpath" {
		os.Exit(labpath())
	}
	os.Exit(guest.Main(os.Args))
}

func labpath() int {
	cwd, _ := os.Getwd()
	load := func() (*guest.Config, error) {
		c, _, err := guest.LoadConfig(os.Getenv)
		return c, err
	}
	return guest.LabpathMain(os.Args[1:], cwd, load, os.Stdout, os.Stderr)
}
