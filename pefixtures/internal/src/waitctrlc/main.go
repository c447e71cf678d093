// Command waitctrlc prints "ready", waits for Ctrl-C (CTRL_C_EVENT on Windows, SIGINT on
// Unix), prints "got ctrl-c" and exits 42.
package main

import (
	"fmt"
	"os"
	"os/signal"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, os.Interrupt)
	fmt.Println("ready")
	<-c
	fmt.Println("got ctrl-c")
	os.Exit(42)
}
