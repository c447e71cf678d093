// Command exit exits with the code given as its argument (ExitProcess takes 32 bits; Wine
// passes only the low 8 bits on to Linux).
package main

import (
	"os"
	"strconv"
)

func main() {
	if len(os.Args) != 2 {
		os.Stderr.WriteString("usage: exit CODE\n")
		os.Exit(2)
	}
	n, err := strconv.ParseInt(os.Args[1], 0, 64)
	if err != nil {
		os.Stderr.WriteString("exit: " + err.Error() + "\n")
		os.Exit(2)
	}
	os.Exit(int(n))
}
