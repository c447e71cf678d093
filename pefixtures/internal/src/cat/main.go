// Command cat copies stdin to stdout.
package main

import (
	"io"
	"os"
)

func main() {
	if _, err := io.Copy(os.Stdout, os.Stdin); err != nil {
		os.Stderr.WriteString("cat: " + err.Error() + "\n")
		os.Exit(1)
	}
}
