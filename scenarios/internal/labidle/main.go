// Command labidle is the scenarios' guest fixture for a relay's front door: it opens N
// AF_VSOCK connections to the host (CID 2) on PORT and holds them without sending a byte,
// as a hostile or broken guest program would, printing "N tried, K open" once every
// attempt is done (a connection the host refuses or resets counts as tried: turning away
// idle connections is allowed), then sleeps SECONDS. Only the standard library, so it builds like the other fixtures.
package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

const afVsock = 40 // AF_VSOCK

// sockaddrVM is struct sockaddr_vm.
type sockaddrVM struct {
	family    uint16
	reserved1 uint16
	port      uint32
	cid       uint32
	flags     uint8
	zero      [3]uint8
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: labidle N PORT SECONDS")
		os.Exit(2)
	}
	n, err1 := strconv.Atoi(os.Args[1])
	port, err2 := strconv.ParseUint(os.Args[2], 10, 32)
	secs, err3 := strconv.Atoi(os.Args[3])
	if err1 != nil || err2 != nil || err3 != nil {
		fmt.Fprintln(os.Stderr, "usage: labidle N PORT SECONDS")
		os.Exit(2)
	}
	fds := make([]int, 0, n)
	refused := 0
	for i := 0; i < n; i++ {
		fd, err := syscall.Socket(afVsock, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			fmt.Fprintf(os.Stderr, "labidle: socket %d: %v\n", i, err)
			os.Exit(1)
		}
		if err := connect(fd, uint32(port)); err == syscall.ECONNRESET || err == syscall.ECONNREFUSED {
			syscall.Close(fd)
			refused++
			continue
		} else if err != nil {
			fmt.Fprintf(os.Stderr, "labidle: connect %d: %v\n", i, err)
			os.Exit(1)
		}
		fds = append(fds, fd)
	}
	fmt.Printf("%d tried, %d open\n", n, len(fds))
	time.Sleep(time.Duration(secs) * time.Second)
}

// connect connects fd to the host's port. A signal (the Go runtime's own preemption) can
// interrupt a blocking connect; the connection then goes on, so it is asked again until
// the kernel says it is connected.
func connect(fd int, port uint32) error {
	sa := sockaddrVM{family: afVsock, port: port, cid: 2}
	for {
		_, _, e := syscall.Syscall(syscall.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
		switch e {
		case 0, syscall.EISCONN:
			return nil
		case syscall.EINTR:
		case syscall.EALREADY, syscall.EINPROGRESS:
			time.Sleep(time.Millisecond)
		default:
			return e
		}
	}
}
