package guest

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestDialReason checks the reason the interpreter prints after "cannot reach the relay at
// ADDR: " for the ways a dial fails.
func TestDialReason(t *testing.T) {
	vsockErr := func(errno syscall.Errno) error {
		return &dialError{network: "vsock", addr: "vsock:2:5555", err: os.NewSyscallError("connect", errno)}
	}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"vsock reset: the host refused", vsockErr(syscall.ECONNRESET),
			"the host refused the connection (connection reset by peer): no relay listens on that port, or the VM has too many open vsock connections (see the hostagent's log)"},
		{"vsock timeout", vsockErr(syscall.ETIMEDOUT), "no connection within 30s"},
		{"vsock no device", vsockErr(syscall.ENODEV), "no such device"},
		{"unix reset stays as is", &dialError{network: "unix", addr: "unix:/run/x", err: os.NewSyscallError("connect", syscall.ECONNRESET)}, "connection reset by peer"},
		{"unix refused", &dialError{network: "unix", addr: "unix:/run/x", err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, "connection refused"},
		{"deadline", context.DeadlineExceeded, "no connection within 30s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := dialReason(tc.err, 30*time.Second); got != tc.want {
				t.Errorf("dialReason = %q, want %q", got, tc.want)
			}
		})
	}
}
