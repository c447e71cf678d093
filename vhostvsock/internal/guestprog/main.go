// Command guestprog runs inside a test guest for the vhostvsock integration tests. It dials
// the host's control port over AF_VSOCK and executes one-line commands, answering one line
// each ("TAG OK ..." or "TAG ERR ..." for a line "TAG CMD ARGS..."): connections, transfers with sha256, concurrency, aborts.
// Build it static (CGO_ENABLED=0).
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"

	"lab/guest"
	"lab/internal/vsockdial"
)

const host = 2

// dialTimeout bounds one connect: the host device answers late under TCG and load, later
// than the kernel's own 2 s vsock connect timeout, which vsockdial replaces with this.
const dialTimeout = 30 * time.Second

// dial connects to the host's port.
func dial(port uint32) (*vsockdial.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	return vsockdial.Dial(ctx, host, port)
}

func main() {
	port := uint32(9000)
	if len(os.Args) > 1 {
		p, _ := strconv.ParseUint(os.Args[1], 10, 32)
		port = uint32(p)
	}
	var ctl net.Conn
	var err error
	for start := time.Now(); time.Since(start) < 120*time.Second; time.Sleep(100 * time.Millisecond) {
		if ctl, err = dial(port); err == nil {
			break
		}
	}
	if err != nil {
		fmt.Println("guestprog: control connection:", err)
		os.Exit(1)
	}
	fmt.Println("guestprog: connected")
	r := bufio.NewReader(ctl)
	var wmu sync.Mutex
	reply := func(format string, args ...any) {
		wmu.Lock()
		fmt.Fprintf(ctl, format+"\n", args...)
		wmu.Unlock()
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 2 {
			continue
		}
		// "TAG CMD ARGS...": replies start with TAG, so concurrent commands can be told apart.
		tag := f[0]
		go func() {
			tagged := func(format string, args ...any) { reply(tag+" "+format, args...) }
			if err := run(f[1:], tagged); err != nil {
				tagged("ERR %s: %v", f[1], err)
			}
		}()
	}
}

func num(s string) uint64 { n, _ := strconv.ParseUint(s, 10, 64); return n }

// stream writes n deterministic pseudo-random bytes (seeded) to w, hashing them into h.
func stream(w io.Writer, n uint64, seed uint64, h hash.Hash) error {
	block := make([]byte, 64<<10)
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	rng.Read(block)
	for i := uint64(0); n > 0; i++ {
		binary.LittleEndian.PutUint64(block, i^seed)
		k := min(n, uint64(len(block)))
		if h != nil {
			h.Write(block[:k])
		}
		if _, err := w.Write(block[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func run(f []string, reply func(string, ...any)) error {
	arg := func(i int) uint64 {
		if i < len(f) {
			return num(f[i])
		}
		return 0
	}
	port := uint32(arg(1))
	switch f[0] {
	case "ping": // guest -> host round trip
		c, err := dial(port)
		if err != nil {
			return err
		}
		defer c.Close()
		c.Write([]byte("ping"))
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err != nil {
			return err
		}
		reply("OK %s", b)
	case "send", "sendz": // guest -> host bulk
		c, err := dial(port)
		if err != nil {
			return err
		}
		defer c.Close()
		var h hash.Hash
		if f[0] == "send" {
			h = sha256.New()
		}
		start := time.Now()
		if err := stream(c, arg(2), arg(3), h); err != nil {
			return err
		}
		c.CloseWrite()
		io.Copy(io.Discard, c) // until the host closes
		if h == nil {
			reply("OK %d", time.Since(start).Nanoseconds())
			return nil
		}
		reply("OK %s", hex.EncodeToString(h.Sum(nil)))
	case "recv", "recvz", "pong": // host -> guest: listen, READY, accept N
		l, err := vsock.Listen(port, nil)
		if err != nil {
			return err
		}
		defer l.Close()
		reply("READY")
		n := max(arg(2), 1)
		for range n {
			c, err := l.Accept()
			if err != nil {
				return err
			}
			switch f[0] {
			case "pong":
				b := make([]byte, 4)
				if _, err := io.ReadFull(c, b); err != nil {
					return err
				}
				c.Write([]byte("pong"))
			case "recvz":
				io.Copy(io.Discard, c)
			case "recv":
				h := sha256.New()
				k, err := io.Copy(h, c)
				if err != nil {
					return err
				}
				reply("OK %s %d", hex.EncodeToString(h.Sum(nil)), k)
			}
			c.Close()
		}
		l.Close() // before the reply, so the port is free for the host's next command
		if f[0] != "recv" {
			reply("OK")
		}
	case "recvraw", "readraw": // host -> guest as lab bench's probe reads: PORT RBUF SOCKBUF (0: the default); recvraw listens, readraw dials
		return recvRaw(port, int(arg(2)), arg(3), f[0] == "readraw", reply)
	case "conc": // N concurrent echo connections of SIZE bytes each
		n, size := int(arg(2)), arg(3)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- echo(port, size, uint64(i+1))
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				return err
			}
		}
		reply("OK")
	case "dial": // the interpreter's own dial (lab/guest) with its 30 s deadline: OK and the ms it took
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		c, err := guest.Dial(ctx, fmt.Sprintf("vsock:%d:%d", host, port))
		if err != nil {
			return err
		}
		c.Close()
		reply("OK %d", time.Since(start).Milliseconds())
	case "connect": // sequential connect+close latency
		n := arg(2)
		start := time.Now()
		for range n {
			c, err := dial(port)
			if err != nil {
				return err
			}
			c.Close()
		}
		reply("OK %d", time.Since(start).Nanoseconds())
	case "abort": // close while a write is blocked (the host is not reading)
		c, err := dial(port)
		if err != nil {
			return err
		}
		cw := &countWriter{w: c}
		done := make(chan error, 1)
		go func() { done <- stream(cw, arg(2), 7, nil) }()
		time.Sleep(time.Second)
		c.Close()
		err = <-done
		reply("OK %d %v", cw.n.Load(), err != nil)
	default:
		return errors.New("unknown command")
	}
	return nil
}

// echo sends size bytes and checks the host echoes exactly them back.
func echo(port uint32, size, seed uint64) error {
	c, err := dial(port)
	if err != nil {
		return err
	}
	defer c.Close()
	sent := sha256.New()
	errc := make(chan error, 1)
	go func() {
		err := stream(c, size, seed, sent)
		c.CloseWrite()
		errc <- err
	}()
	got := sha256.New()
	k, err := io.Copy(got, c)
	if err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	if uint64(k) != size || string(got.Sum(nil)) != string(sent.Sum(nil)) {
		return fmt.Errorf("echo of %d bytes came back as %d bytes with another hash", size, k)
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// recvRaw reads one host->guest connection to EOF as lab bench's probe does: a blocking
// AF_VSOCK socket (no Go netpoller) read in rbuf-byte reads, its buffer size
// (SO_VM_SOCKETS_BUFFER_SIZE, the credit the host gets) set to sockbuf unless 0. With dial
// set it connects to the host's port (through the device's Unix socket convention, as the
// probe does); otherwise it listens there, answers READY and accepts one connection.
func recvRaw(port uint32, rbuf int, sockbuf uint64, dial bool, reply func(string, ...any)) error {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if sockbuf > 0 {
		// MAX first: SIZE is clamped to it.
		for _, opt := range []int{unix.SO_VM_SOCKETS_BUFFER_MAX_SIZE, unix.SO_VM_SOCKETS_BUFFER_SIZE} {
			if err := unix.SetsockoptUint64(fd, unix.AF_VSOCK, opt, sockbuf); err != nil {
				unix.Close(fd)
				return err
			}
		}
	}
	cfd := fd
	if dial {
		err = unix.Connect(fd, &unix.SockaddrVM{CID: host, Port: port})
	} else {
		// An accepted socket inherits the listener's buffer size.
		err = unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port})
		if err == nil {
			err = unix.Listen(fd, 1)
		}
		if err == nil {
			reply("READY")
			cfd, _, err = unix.Accept(fd)
			unix.Close(fd) // before the reply, so the port is free for the host's next command
			if err != nil {
				return err
			}
		}
	}
	if err != nil {
		unix.Close(fd)
		return err
	}
	defer unix.Close(cfd)
	buf := make([]byte, max(rbuf, 1))
	var total, reads int64
	for {
		n, err := unix.Read(cfd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		total += int64(n)
		reads++
	}
	reply("OK %d %d", total, reads)
	return nil
}
