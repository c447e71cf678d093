// Command getenv prints the value of the environment variable NAME; it exits 1 when the
// variable is not set.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: getenv NAME")
		os.Exit(2)
	}
	v, ok := os.LookupEnv(os.Args[1])
	if !ok {
		fmt.Fprintf(os.Stderr, "getenv: %s is not set\n", os.Args[1])
		os.Exit(1)
	}
	fmt.Println(v)
}
