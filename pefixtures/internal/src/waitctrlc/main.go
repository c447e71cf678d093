//go:build windows

// Command waitctrlc prints "ready", waits for Ctrl-C (CTRL_C_EVENT), prints "got ctrl-c" and
// exits 42.
//
// It exits from its console control handler, on the thread Windows (here Wine) runs the
// handler on, as a C program's handler calling ExitProcess would. Exiting from main once the
// handler has passed the event on (os/signal's way) makes Wine race the handler thread's own
// exit against ExitProcess: Wine ends the other threads with SIGQUIT, and one caught in its
// teardown left the process hung in exit(3) until the wineserver killed it (SIGKILL, status 137)
// in about 3 % of interop runs under load (docs/DESIGN.md, "Ctrl-C and Wine's exit race").
package main

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

const ctrlCEvent = 0 // CTRL_C_EVENT

func main() {
	set := syscall.NewLazyDLL("kernel32.dll").NewProc("SetConsoleCtrlHandler")
	handler := syscall.NewCallback(func(event uint32) uintptr {
		if event != ctrlCEvent {
			return 0 // not ours: the next handler (Go's runtime) decides
		}
		fmt.Println("got ctrl-c")
		os.Exit(42)
		return 1
	})
	if ok, _, err := set.Call(handler, 1); ok == 0 {
		fmt.Fprintln(os.Stderr, "waitctrlc.exe: SetConsoleCtrlHandler:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	for {
		time.Sleep(time.Hour) // a timer keeps the runtime from reporting a deadlock
	}
}
