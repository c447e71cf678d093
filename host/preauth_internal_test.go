package host

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// TestPreauthEvictsTheBusiestPeer: over budget, the oldest connection of the peer holding
// the most pending connections goes, never the newcomer and never a quieter peer's.
func TestPreauthEvictsTheBusiestPeer(t *testing.T) {
	p := newPreauth(4)
	conn := func(key string) *pendingConn {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return &pendingConn{conn: a, key: key}
	}
	a1, a2, a3, b1 := conn("uid:1"), conn("uid:1"), conn("uid:1"), conn("uid:2")
	for _, c := range []*pendingConn{a1, b1, a2, a3} {
		p.admit(c)
	}
	b2 := conn("uid:2")
	p.admit(b2) // uid:1 holds 3 of 4: its oldest goes
	if !a1.evicted.Load() || b1.evicted.Load() || p.len() != 4 {
		t.Fatalf("after b2: a1 evicted %v, b1 evicted %v, %d pending", a1.evicted.Load(), b1.evicted.Load(), p.len())
	}
	if p.leave(a1) {
		t.Error("leave of an evicted connection reported it pending")
	}
	b3 := conn("uid:2")
	p.admit(b3) // uid:1 and uid:2 hold 2 each: the older of the two peers' oldest goes (b1)
	if !b1.evicted.Load() || a2.evicted.Load() {
		t.Errorf("after b3: b1 evicted %v, a2 evicted %v", b1.evicted.Load(), a2.evicted.Load())
	}
	for _, c := range []*pendingConn{a2, a3, b2, b3} {
		if !p.leave(c) {
			t.Errorf("%s #%d not pending", c.key, c.seq)
		}
	}
	if p.len() != 0 || len(p.peers) != 0 {
		t.Errorf("left behind: %d conns, peers %v", p.len(), p.peers)
	}
}

// TestPeerKeyUnix: a Unix socket peer is known by its uid (SO_PEERCRED).
func TestPeerKeyUnix(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, want := peerKey(s, DefaultPeerCIDOf), "uid:"+strconv.Itoa(os.Getuid()); got != want {
		t.Errorf("peerKey = %q, want %q", got, want)
	}
}
