// Command labfix is the scenarios' host fixture: one small program with one behaviour
// per subcommand, run on the host by the relay when a guest scenario launches it.
// The subcommand is the first argument, or the program's own name when it is not
// "labfix" ("host-hello" and a stub named "hello" both run "labfix hello"). It uses
// only the standard library, so the suite can build it anywhere Go is installed.
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func main() {
	args := os.Args
	name := strings.TrimPrefix(strings.TrimSuffix(filepath.Base(args[0]), ".exe"), "host-")
	var sub string
	if name != "labfix" {
		sub, args = name, args[1:]
	} else if len(args) > 1 {
		sub, args = args[1], args[2:]
	} else {
		fmt.Fprintln(os.Stderr, "usage: labfix SUBCOMMAND [ARGS...]")
		os.Exit(2)
	}
	os.Exit(run(sub, args))
}

func run(sub string, args []string) int {
	switch sub {
	case "hello":
		fmt.Println("hello from the host")
	case "echo": // arguments, one per line, quoted: shows exact argv crossing
		for i, a := range args {
			fmt.Printf("arg%d=%q\n", i+1, a)
		}
	case "argv0":
		fmt.Println(os.Args[0])
	case "cat": // stdin to stdout, then the byte count on stderr
		n, err := io.Copy(os.Stdout, os.Stdin)
		fmt.Fprintf(os.Stderr, "labfix: %d bytes\n", n)
		if err != nil {
			return 1
		}
	case "streams": // interleaved, separate stdout and stderr
		for i := 1; i <= 3; i++ {
			fmt.Fprintf(os.Stdout, "out %d\n", i)
			fmt.Fprintf(os.Stderr, "err %d\n", i)
		}
	case "exit":
		n, _ := strconv.Atoi(first(args))
		return n
	case "kill": // die by a signal: the guest should see 128+N
		sig := signalOf(first(args))
		signal.Reset(sig)
		p, _ := os.FindProcess(os.Getpid())
		p.Signal(sig)
		time.Sleep(10 * time.Second)
		return 99
	case "yes": // endless "y" lines: ends only when its reader goes away
		w := bufio.NewWriter(os.Stdout)
		for {
			if _, err := w.WriteString("y\n"); err != nil {
				return 141
			}
		}
	case "gen": // N deterministic bytes to stdout
		n, _ := strconv.ParseInt(first(args), 10, 64)
		if _, err := io.CopyN(os.Stdout, newGen(), n); err != nil {
			return 1
		}
	case "gensum": // sha256 of what gen N writes
		n, _ := strconv.ParseInt(first(args), 10, 64)
		h := sha256.New()
		io.CopyN(h, newGen(), n)
		fmt.Println(hex.EncodeToString(h.Sum(nil)))
	case "sha256": // sha256 and length of stdin
		h := sha256.New()
		n, err := io.Copy(h, os.Stdin)
		if err != nil {
			return 1
		}
		fmt.Printf("%s %d\n", hex.EncodeToString(h.Sum(nil)), n)
	case "pwd":
		wd, _ := os.Getwd()
		fmt.Println(wd)
	case "env": // NAME... : value or "NAME unset"
		for _, n := range args {
			if v, ok := os.LookupEnv(n); ok {
				fmt.Printf("%s=%s\n", n, v)
			} else {
				fmt.Printf("%s unset\n", n)
			}
		}
	case "tty":
		return ttyReport()
	case "wait-signal": // print "ready", then report the first catchable signal
		ch := make(chan os.Signal, 1)
		notifyAll(ch)
		fmt.Println("ready")
		select {
		case s := <-ch:
			fmt.Printf("got %s\n", sigName(s))
			return 128 + sigNum(s)
		case <-time.After(60 * time.Second):
			fmt.Println("timeout")
			return 1
		}
	case "sleep":
		d, _ := time.ParseDuration(first(args))
		time.Sleep(d)
	case "true":
	default:
		fmt.Fprintf(os.Stderr, "labfix: unknown subcommand %q\n", sub)
		return 2
	}
	return 0
}

func first(a []string) string {
	if len(a) == 0 {
		return ""
	}
	return a[0]
}

// gen is a tiny deterministic byte stream (xorshift), so both ends agree on 256 MiB
// without storing it.
type gen struct{ x uint64 }

func newGen() *gen { return &gen{x: 0x9e3779b97f4a7c15} }

func (g *gen) Read(p []byte) (int, error) {
	for i := range p {
		g.x ^= g.x << 13
		g.x ^= g.x >> 7
		g.x ^= g.x << 17
		p[i] = byte(g.x >> 32)
	}
	return len(p), nil
}
