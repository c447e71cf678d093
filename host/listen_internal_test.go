package host

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/mdlayher/vsock"
)

// userspaceAddr mimics the userspace vsock backend's address (lab/vhostvsock.Addr).
type userspaceAddr struct{ CID, Port uint32 }

func (*userspaceAddr) Network() string { return "vsock" }
func (*userspaceAddr) String() string  { return "vm(7):1" }

type methodAddr struct{}

func (methodAddr) Network() string   { return "vsock" }
func (methodAddr) String() string    { return "x" }
func (methodAddr) ContextID() uint32 { return 9 }

func TestDefaultPeerCIDOf(t *testing.T) {
	tests := []struct {
		addr net.Addr
		cid  uint32
		ok   bool
	}{
		{&vsock.Addr{ContextID: 3, Port: 1}, 3, true},
		{&userspaceAddr{CID: 7, Port: 1}, 7, true},
		{methodAddr{}, 9, true},
		{&net.UnixAddr{Name: "x", Net: "unix"}, 0, false},
		{(*userspaceAddr)(nil), 0, false},
		{nil, 0, false},
	}
	for _, tt := range tests {
		cid, ok := DefaultPeerCIDOf(tt.addr)
		if cid != tt.cid || ok != tt.ok {
			t.Errorf("DefaultPeerCIDOf(%#v) = %d, %v; want %d, %v", tt.addr, cid, ok, tt.cid, tt.ok)
		}
	}
}

func TestCheckPeer(t *testing.T) {
	c, err := Config{Token: make([]byte, 16), PeerCID: 3}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.checkPeer(&vsock.Addr{ContextID: 3}); err != nil {
		t.Errorf("CID 3: %v", err)
	}
	if err := c.checkPeer(&userspaceAddr{CID: 4}); !errors.Is(err, errBadPeer) {
		t.Errorf("CID 4: %v", err)
	}
	if err := c.checkPeer(&net.UnixAddr{Name: "@", Net: "unix"}); err != nil {
		t.Errorf("unix peer: %v", err)
	}
	c.PeerCID = 0
	if err := c.checkPeer(&vsock.Addr{ContextID: 42}); err != nil {
		t.Errorf("any CID: %v", err)
	}
}

func TestCheckToken(t *testing.T) {
	c := Config{Token: []byte("0123456789abcdef")}
	for _, tok := range []string{"", "0123456789abcde", "0123456789abcdefg", "1123456789abcdef"} {
		if c.checkToken([]byte(tok)) == nil {
			t.Errorf("token %q accepted", tok)
		}
	}
	if err := c.checkToken([]byte("0123456789abcdef")); err != nil {
		t.Error(err)
	}
}

func TestListenUnix(t *testing.T) {
	dir, err := os.MkdirTemp("", "ll")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s")
	l, err := Listen("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	if _, err := Listen("unix:" + sock); err == nil {
		t.Error("a second relay took over a live socket")
	}
	// A stale socket (its listener gone without removing it) is replaced.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l, err = Listen("unix:" + sock)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	l.Close()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	if _, err := Listen("unix:" + file); err == nil {
		t.Error("listened over a regular file")
	}
	for _, bad := range []string{"", "unix:", "tcp:1", "vsock:x", "vsock:", "nocolon"} {
		if _, err := Listen(bad); err == nil {
			t.Errorf("Listen(%q) succeeded", bad)
		}
	}
}
