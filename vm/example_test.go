package vm_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"lab/vm"
)

// A Go test or program boots a VM, runs commands over the kept connection and
// copies files with SFTP. Outside the lab binary, point Hostagent at a built lab.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "vm")
	if _, err := vm.Up(ctx, vm.Config{Name: "example", StateDir: dir, Hostagent: []string{"/path/to/lab", "hostagent"}}); err != nil {
		log.Fatal(err)
	}
	defer vm.Down(ctx, dir)

	c, err := vm.Connect(ctx, dir)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	code, err := c.Run(ctx, "uname -r", nil, os.Stdout, os.Stderr)
	fmt.Println(code, err)

	fs, err := c.SFTP()
	if err != nil {
		log.Fatal(err)
	}
	f, _ := fs.Create("/tmp/hello")
	f.Write([]byte("hello\n"))
	f.Close()
}
