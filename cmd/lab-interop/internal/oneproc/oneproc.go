// Package oneproc gives lab-interop one P (GOMAXPROCS 1) from its init, before most of the
// program's packages initialise.
//
// Why one P: the interpreter only moves bytes between a socket and stdio, and with more Ps
// every hand-off between its goroutines wakes an idle thread to spin (a quarter fewer context
// switches per launch on the host; 32 MiB through interop in the TCG guest took 16-25 % less
// CPU). Why so early: changing GOMAXPROCS destroys the surplus P and returns every span cached
// in its mcache to the heap, one fresh page of span-set blocks per size class; called from
// main, after all package inits had allocated, that was about 40 page faults on the host and
// 12 more per launch in the TCG guest, where each costs a fraction of a millisecond. Package
// init order is by import path among the packages whose imports are initialised (the Go spec),
// so this one, importing only runtime and syscall, runs right after them. GOMAXPROCS in the
// environment wins.
package oneproc

import (
	"runtime"
	"syscall"
)

func init() {
	if _, ok := syscall.Getenv("GOMAXPROCS"); !ok {
		runtime.GOMAXPROCS(1)
	}
}
