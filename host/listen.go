package host

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"

	"github.com/mdlayher/vsock"
)

// Listen opens a listener for a relay address:
//
//	unix:PATH   a Unix socket (a stale socket file left by a dead relay is replaced;
//	            the socket is made accessible to its owner only)
//	vsock:PORT  kernel AF_VSOCK on PORT, any local CID (needs /dev/vhost-vsock for guests)
func Listen(addr string) (net.Listener, error) {
	kind, rest, ok := strings.Cut(addr, ":")
	if !ok || rest == "" {
		return nil, fmt.Errorf("host: listen address %q: want unix:PATH or vsock:PORT", addr)
	}
	switch kind {
	case "unix":
		return listenUnix(rest)
	case "vsock":
		port, err := strconv.ParseUint(rest, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("host: listen address %q: the vsock port must be a number", addr)
		}
		l, err := vsock.Listen(uint32(port), nil)
		if err != nil {
			return nil, fmt.Errorf("host: listen on vsock port %d: %w (is the vsock module loaded? try: modprobe vhost_vsock)", port, err)
		}
		return l, nil
	default:
		return nil, fmt.Errorf("host: listen address %q: unknown transport %q (want unix or vsock)", addr, kind)
	}
}

func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("host: listen on %s: the file exists and is not a socket", path)
		}
		// Replace the file only if nobody answers on it: never steal a live relay's socket.
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("host: listen on %s: another relay is already listening there", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("host: remove stale socket: %w", err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("host: %w", err)
	}
	// chmod rather than umask: the umask is process-wide and other goroutines create files.
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("host: %w", err)
	}
	return l, nil
}

// DefaultPeerCIDOf returns the vsock context ID of a remote address: a
// github.com/mdlayher/vsock *Addr, an address with a ContextID() uint32 method, or a
// struct (or pointer to one) whose Network() is "vsock" and which has a uint32 field named
// CID or ContextID (the userspace vsock backend's Addr). ok is false for other addresses.
func DefaultPeerCIDOf(a net.Addr) (uint32, bool) {
	switch v := a.(type) {
	case *vsock.Addr:
		return v.ContextID, true
	case interface{ ContextID() uint32 }:
		return v.ContextID(), true
	}
	if a == nil || a.Network() != "vsock" {
		return 0, false
	}
	rv := reflect.ValueOf(a)
	for rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return 0, false
		}
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		return 0, false
	}
	for _, name := range []string{"CID", "ContextID"} {
		f := rv.FieldByName(name)
		if f.IsValid() && f.Kind() == reflect.Uint32 {
			return uint32(f.Uint()), true
		}
	}
	return 0, false
}

// Errors of authentication; the relay answers both with the same reply so a prober learns
// nothing about which check failed, and logs which one it was.
var (
	errBadToken = errors.New("host: wrong token")
	errBadPeer  = errors.New("host: peer CID not allowed")
)

// checkPeer applies Config.PeerCID to a connection's remote address.
func (c *Config) checkPeer(remote net.Addr) error {
	if c.PeerCID == 0 {
		return nil
	}
	isVsock := remote != nil && remote.Network() == "vsock"
	if _, ok := remote.(*vsock.Addr); ok {
		isVsock = true
	}
	if !isVsock {
		return nil // Unix sockets: the file mode is the access control
	}
	cid, ok := c.PeerCIDOf(remote)
	if !ok {
		return fmt.Errorf("%w: cannot tell the CID of %v", errBadPeer, remote)
	}
	if cid != c.PeerCID {
		return fmt.Errorf("%w: CID %d, want %d", errBadPeer, cid, c.PeerCID)
	}
	return nil
}

// checkToken compares a presented token with the configured one in constant time.
func (c *Config) checkToken(got []byte) error {
	if subtle.ConstantTimeCompare(got, c.Token) != 1 {
		return errBadToken
	}
	return nil
}
