// Command powershell is lab's powershell.exe: Wine has no PowerShell, so instead of a
// "command not found" (exit 127) that looks like a broken PATH, scripts that call
// powershell.exe get one line that says why, and exit 1.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "powershell.exe: not available in lab's Windows personality (Wine has no PowerShell); use cmd.exe")
	os.Exit(1)
}
