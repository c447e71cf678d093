// Command labbench is lab bench's guest-side probe: it times launches and pipes inside
// the guest, where the figures are not blurred by the SSH session that starts it, and
// prints them as "key value" lines for lab bench to parse.
//
//	labbench launch N PROG ARGS...        N sequential runs; one "ns D" line each
//	labbench concurrent N PROG ARGS...    N at once; "wall_ns D", "ok K", "failed F"
//	labbench pipe-from PROG ARGS...       read PROG's stdout to EOF; "bytes B", "ns D"
//	labbench pipe-to N PROG ARGS...       write N bytes to PROG's stdin; "bytes B", "ns D"
//	labbench ssh N ADDR USER KEYFILE CMD  N sequential SSH execs (new connection each); "ns D" each
//	labbench vsock-read PORT              connect to the host (CID 2) on PORT, read to EOF; "bytes B", "ns D"
//	labbench vsock-write N PORT           connect to the host on PORT, write N bytes; "bytes B", "ns D"
//	labbench traced N FILE PROG ARGS...   N sequential runs with LAB_TRACE=FILE (the interpreter
//	                                      records its steps there); "run T0 T1" each, CLOCK_MONOTONIC
//	                                      ns just before the fork and just after the wait
//
// lab bench runs "labbench launch N labbench ssh 1 ..." for its SSH baseline, so each
// timed run starts an SSH client process in the guest, as `ssh host prog` does.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: labbench launch|concurrent|pipe-from|pipe-to|ssh ...")
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "launch":
		n := atoi(args, 0)
		for i := 0; i < n; i++ {
			t := time.Now()
			if err := run(args[1:]); err != nil {
				fail("launch %d: %v", i, err)
			}
			fmt.Printf("ns %d\n", time.Since(t).Nanoseconds())
		}
	case "vsock-read":
		c, err := dialHost(uint32(atoi(args, 0)), dialTimeout)
		if err != nil {
			fail("%v", err)
		}
		t := time.Now()
		n, err := readAll(c, make([]byte, 256<<10))
		if err != nil {
			fail("%v", err)
		}
		fmt.Printf("bytes %d\nns %d\n", n, time.Since(t).Nanoseconds())
	case "vsock-write":
		total := int64(atoi(args, 0))
		c, err := dialHost(uint32(atoi(args, 1)), dialTimeout)
		if err != nil {
			fail("%v", err)
		}
		buf := make([]byte, 256<<10)
		t := time.Now()
		var n int64
		for n < total {
			m, err := c.Write(buf[:min(int64(len(buf)), total-n)])
			n += int64(m)
			if err != nil {
				fail("%v", err)
			}
		}
		c.CloseWrite()
		io.Copy(io.Discard, c) // the host closes once it read everything
		fmt.Printf("bytes %d\nns %d\n", n, time.Since(t).Nanoseconds())
	case "traced":
		n := atoi(args, 0)
		if len(args) < 3 {
			fail("usage: labbench traced N FILE PROG ARGS...")
		}
		env := append(os.Environ(), "LAB_TRACE="+args[1])
		for i := 0; i < n; i++ {
			cmd := exec.Command(args[2], args[3:]...)
			cmd.Stdout, cmd.Env = io.Discard, env
			t0 := mono()
			err := cmd.Run()
			t1 := mono()
			if err != nil {
				fail("traced launch %d: %v", i, err)
			}
			fmt.Printf("run %d %d\n", t0, t1)
		}
	case "concurrent":
		n := atoi(args, 0)
		// Every launch's stdin and stdout is one shared /dev/null (no pipe) and only stderr
		// is a pipe, and the descriptor limit is raised for N children at once: the probe's
		// own limit (1024 in the initramfs guest) must not be what fails a launch.
		null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
		if err != nil {
			fail("%v", err)
		}
		if want := uint64(4*n + 256); want > 1024 {
			var lim unix.Rlimit
			if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil && lim.Cur < want {
				lim.Cur = want
				if lim.Max < want {
					lim.Max = want // root in the guest may raise the hard limit too
				}
				if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
					fmt.Fprintf(os.Stderr, "labbench: raising the descriptor limit to %d: %v\n", want, err)
				}
			}
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok, bad := 0, 0
		var errs []string
		t := time.Now()
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := exec.Command(args[1], args[2:]...)
				cmd.Stdin, cmd.Stdout = null, null
				var errb strings.Builder
				cmd.Stderr = &errb
				err := cmd.Run()
				mu.Lock()
				if err == nil {
					ok++
				} else {
					bad++
					errs = append(errs, fmt.Sprintf("%v: %s", err, strings.TrimSpace(errb.String())))
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		fmt.Printf("wall_ns %d\nok %d\nfailed %d\n", time.Since(t).Nanoseconds(), ok, bad)
		for _, e := range errs {
			fmt.Fprintf(os.Stderr, "labbench: failed launch: %s\n", e)
		}
	case "pipe-from":
		cmd := exec.Command(args[0], args[1:]...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			fail("%v", err)
		}
		t := time.Now()
		if err := cmd.Start(); err != nil {
			fail("%v", err)
		}
		n, _ := io.CopyBuffer(io.Discard, out, make([]byte, 256<<10))
		if err := cmd.Wait(); err != nil {
			fail("%s: %v", args[0], err)
		}
		fmt.Printf("bytes %d\nns %d\n", n, time.Since(t).Nanoseconds())
	case "pipe-to":
		total := int64(atoi(args, 0))
		cmd := exec.Command(args[1], args[2:]...)
		in, err := cmd.StdinPipe()
		if err != nil {
			fail("%v", err)
		}
		cmd.Stdout = io.Discard
		t := time.Now()
		if err := cmd.Start(); err != nil {
			fail("%v", err)
		}
		buf := make([]byte, 256<<10)
		var n int64
		for n < total {
			m, err := in.Write(buf[:min(int64(len(buf)), total-n)])
			n += int64(m)
			if err != nil {
				break
			}
		}
		in.Close()
		if err := cmd.Wait(); err != nil {
			fail("%s: %v", args[1], err)
		}
		fmt.Printf("bytes %d\nns %d\n", n, time.Since(t).Nanoseconds())
	case "ssh":
		n := atoi(args, 0)
		if len(args) != 5 {
			fail("usage: labbench ssh N ADDR USER KEYFILE CMD")
		}
		key, err := os.ReadFile(args[3])
		if err != nil {
			fail("%v", err)
		}
		signer, err := ssh.ParsePrivateKey(key)
		if err != nil {
			fail("%v", err)
		}
		cfg := &ssh.ClientConfig{
			User: args[2], Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
			// A throwaway server on the host's loopback, reached through QEMU's NAT for
			// one measurement; its key is not worth pinning.
			HostKeyCallback: ssh.InsecureIgnoreHostKey(),
			Timeout:         30 * time.Second,
		}
		for i := 0; i < n; i++ {
			t := time.Now()
			if err := sshExec(args[1], cfg, args[4]); err != nil {
				fail("ssh %d: %v", i, err)
			}
			fmt.Printf("ns %d\n", time.Since(t).Nanoseconds())
		}
	default:
		fail("unknown subcommand %q", os.Args[1])
	}
}

func sshExec(addr string, cfg *ssh.ClientConfig, cmd string) error {
	c, err := net.DialTimeout("tcp", addr, cfg.Timeout)
	if err != nil {
		return err
	}
	conn, chans, reqs, err := ssh.NewClientConn(c, addr, cfg)
	if err != nil {
		return err
	}
	client := ssh.NewClient(conn, chans, reqs)
	defer client.Close()
	s, err := client.NewSession()
	if err != nil {
		return err
	}
	defer s.Close()
	s.Stdout = io.Discard
	return s.Run(cmd)
}

func run(argv []string) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = io.Discard
	return cmd.Run()
}

// mono is CLOCK_MONOTONIC in ns, the clock the interpreter's trace records use.
func mono() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

func atoi(a []string, i int) int {
	if len(a) <= i {
		fail("missing count")
	}
	n, err := strconv.Atoi(a[i])
	if err != nil {
		fail("count %q: %v", a[i], err)
	}
	return n
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "labbench: "+format+"\n", a...)
	os.Exit(1)
}
