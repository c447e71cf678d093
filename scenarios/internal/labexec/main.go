// Command labexec is the scenarios' guest fixture: it calls execve(2) on its arguments
// directly and prints the kernel's answer the way C's strerror does ("Exec format
// error"). Shells retry a file the kernel refuses with ENOEXEC as a shell script
// (busybox ash does), so they cannot show what the kernel said.
package main

import (
	"fmt"
	"os"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: labexec PROGRAM [ARGS...]")
		os.Exit(2)
	}
	err := syscall.Exec(os.Args[1], os.Args[1:], os.Environ())
	msg := err.Error()
	if msg != "" {
		msg = string(msg[0]-'a'+'A') + msg[1:]
	}
	fmt.Fprintf(os.Stderr, "labexec: %s: %s\n", os.Args[1], msg)
	os.Exit(126)
}
