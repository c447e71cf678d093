// Command pwd prints its working directory (on Windows a drive path such as C:\work).
package main

import (
	"fmt"
	"os"
)

func main() {
	d, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pwd:", err)
		os.Exit(1)
	}
	fmt.Println(d)
}
