// Command upper copies stdin to stdout in upper case, line by line (each line is written as
// soon as it is read, so it can be driven interactively).
package main

import (
	"bufio"
	"io"
	"os"
	"strings"
)

func main() {
	r := bufio.NewReader(os.Stdin)
	for {
		line, err := r.ReadString('\n')
		if line != "" {
			if _, werr := os.Stdout.WriteString(strings.ToUpper(line)); werr != nil {
				os.Exit(1)
			}
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			os.Stderr.WriteString("upper: " + err.Error() + "\n")
			os.Exit(1)
		}
	}
}
