// Command stderr writes distinct lines to stdout and to stderr, alternating:
// "stdout 0", "stderr 0", "stdout 1", "stderr 1", "stdout 2", "stderr 2".
package main

import (
	"fmt"
	"os"
)

func main() {
	for i := 0; i < 3; i++ {
		fmt.Fprintf(os.Stdout, "stdout %d\n", i)
		fmt.Fprintf(os.Stderr, "stderr %d\n", i)
	}
}
