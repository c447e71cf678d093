package wire_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"

	"lab/wire"
)

// A whole launch over an in-memory connection: the guest sends its
// request and stdin, the host runs "tr a-z A-Z" and reports the exit.
func ExampleSession() {
	gc, hc := net.Pipe()
	guest := wire.NewSession(gc, wire.RoleGuest)
	host := wire.NewSession(hc, wire.RoleHost)
	defer guest.Close()
	defer host.Close()
	ctx := context.Background()

	go func() { // the relay
		hello, _ := host.Recv(ctx)
		launch, _ := host.Recv(ctx)
		fmt.Printf("token %q, argv %q\n", hello.(*wire.Hello).Token, launch.(*wire.Launch).Argv)
		host.Send(wire.NewHello(nil), &wire.LaunchResult{})
		in, _ := io.ReadAll(host.Reader(wire.Stdin))
		io.WriteString(host.Writer(wire.Stdout), strings.ToUpper(string(in)))
		host.Writer(wire.Stdout).CloseWrite()
		host.Writer(wire.Stderr).CloseWrite()
		host.Send(&wire.Exit{Code: 0x102})
	}()

	guest.Send(wire.NewHello([]byte("t0k")), &wire.Launch{Format: wire.FormatPE, Path: "/mnt/c/tr.exe", Argv: []string{"tr.exe"}})
	guest.Recv(ctx) // the relay's Hello
	if r, _ := guest.Recv(ctx); r.(*wire.LaunchResult).Errno != 0 {
		return
	}
	go func() {
		io.WriteString(guest.Writer(wire.Stdin), "hello\n")
		guest.Writer(wire.Stdin).CloseWrite()
	}()
	out, _ := io.ReadAll(guest.Reader(wire.Stdout))
	exit, _ := guest.Recv(ctx)
	fmt.Printf("%s", out)
	fmt.Println("status", exit.(*wire.Exit).Status())
	// Output:
	// token "t0k", argv ["tr.exe"]
	// HELLO
	// status 2
}
