// Command lab-interop runs inside the guest. It is one static binary
// (CGO_ENABLED=0) with several names, chosen by the basename of argv[0], as
// WSL's /init is:
//
//   - installed as the binfmt_misc interpreter (any other name), the
//     kernel runs it as `lab-interop /full/path argv0 args...` (flag P) and
//     it runs the program on the host through the relay (lab/guest.Main);
//   - as `wslpath` (a symlink), it translates paths between guest and host
//     as WSL's wslpath does, with its messages; as `labpath`, the same with
//     lab's messages (lab/guest.PathTool).
package main

import (
	"os"
	"path/filepath"

	"lab/guest"
)

func main() {
	switch name := filepath.Base(os.Args[0]); name {
	case "wslpath", "labpath":
		os.Exit(pathTool(name))
	}
	os.Exit(guest.Main(os.Args))
}

func pathTool(name string) int {
	cwd, _ := os.Getwd()
	t := guest.PathTool{
		Name: name,
		Env:  guest.PathEnv{Cwd: cwd, Distro: os.Getenv("WSL_DISTRO_NAME"), Realpath: filepath.EvalSymlinks},
		Load: func() (*guest.Config, error) {
			c, _, err := guest.LoadConfig(os.Getenv)
			return c, err
		},
		Out: os.Stdout,
		Err: os.Stderr,
	}
	return t.Main(os.Args[1:])
}
