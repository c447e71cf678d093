//go:build windows

// Command cmdline prints its command line exactly as Windows gave it (GetCommandLineW, as
// UTF-8) and a newline: what a program that parses its own command line (cmd.exe, MSVCRT,
// Go's os.Args) starts from.
package main

import (
	"os"
	"syscall"
	"unicode/utf16"
	"unsafe"
)

func main() {
	var s []uint16
	for p := syscall.GetCommandLine(); *p != 0; p = (*uint16)(unsafe.Add(unsafe.Pointer(p), 2)) {
		s = append(s, *p)
	}
	os.Stdout.WriteString(string(utf16.Decode(s)) + "\n")
}
