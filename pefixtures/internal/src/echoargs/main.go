// Command echoargs prints each argument (argv[1:]) on its own line. On Windows, Go builds
// os.Args from GetCommandLineW, so the arguments arrive as UTF-16 and are printed as UTF-8.
package main

import (
	"bufio"
	"os"
)

func main() {
	w := bufio.NewWriter(os.Stdout)
	for _, a := range os.Args[1:] {
		w.WriteString(a)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		os.Exit(1)
	}
}
