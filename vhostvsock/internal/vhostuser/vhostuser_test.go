package vhostuser

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func socketPair(t *testing.T) (*Conn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "sock")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	a, b := mk(fds[0]), mk(fds[1])
	t.Cleanup(func() { a.Close(); b.Close() })
	return NewConn(a), b
}

func TestRoundTripWithFDs(t *testing.T) {
	c, peer := socketPair(t)
	front := NewConn(peer)
	efd, _ := unix.Eventfd(0, unix.EFD_CLOEXEC)
	defer unix.Close(efd)
	payload := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	if err := front.Write(SetVringKick, FlagVersion, payload, efd); err != nil {
		t.Fatal(err)
	}
	m, err := c.Read()
	if err != nil {
		t.Fatal(err)
	}
	if m.Request != SetVringKick || m.Flags != FlagVersion || !bytes.Equal(m.Payload, payload) || len(m.FDs) != 1 {
		t.Fatalf("got %+v", m)
	}
	// The received fd is the same eventfd.
	unix.Write(m.FDs[0], []byte{5, 0, 0, 0, 0, 0, 0, 0})
	var b [8]byte
	if n, _ := unix.Read(efd, b[:]); n != 8 || b[0] != 5 {
		t.Fatalf("fd not passed: %v", b)
	}
	m.CloseFDs()
	// Reply.
	if err := c.Reply(GetFeatures, []byte{9, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	r, err := front.Read()
	if err != nil || r.Flags != FlagVersion|FlagReply || r.Payload[0] != 9 {
		t.Fatalf("reply %+v %v", r, err)
	}
}

func TestShortReads(t *testing.T) {
	c, peer := socketPair(t)
	msg := Header{Request: SetVringNum, Flags: FlagVersion, Size: 8}.Marshal(nil)
	msg = append(msg, VringState{1, 256}.Marshal(nil)...)
	go func() {
		for _, b := range msg { // one byte at a time
			peer.Write([]byte{b})
		}
		peer.Close()
	}()
	m, err := c.Read()
	if err != nil {
		t.Fatal(err)
	}
	s, _ := ParseVringState(m.Payload)
	if m.Request != SetVringNum || s != (VringState{1, 256}) {
		t.Fatalf("got %v %+v", m.Request, s)
	}
	if _, err := c.Read(); err != io.EOF {
		t.Fatalf("clean close: %v, want io.EOF", err)
	}
}

func TestBadMessages(t *testing.T) {
	cases := map[string][]byte{
		"oversize":    Header{Request: SetMemTable, Flags: FlagVersion, Size: MaxPayload + 1}.Marshal(nil),
		"bad version": Header{Request: GetFeatures, Flags: 2}.Marshal(nil),
		"truncated":   append(Header{Request: SetFeatures, Flags: FlagVersion, Size: 8}.Marshal(nil), 1, 2),
		"short head":  {1, 0, 0},
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			c, peer := socketPair(t)
			peer.Write(b)
			peer.CloseWrite()
			if _, err := c.Read(); err == nil || err == io.EOF {
				t.Fatalf("Read = %v, want an error", err)
			}
		})
	}
}

func TestPayloadCodecs(t *testing.T) {
	a := VringAddr{Index: 1, Flags: 0, Desc: 0x1000, Used: 0x2000, Avail: 0x3000, Log: 7}
	if got, err := ParseVringAddr(a.Marshal(nil)); err != nil || got != a {
		t.Fatalf("VringAddr round trip: %+v %v", got, err)
	}
	rs := []Region{{0, 0xa0000, 0x7f00, 0}, {0xc0000, 0x1000, 0x7fc0, 0xc0000}}
	got, err := ParseMemTable(MarshalMemTable(nil, rs))
	if err != nil || len(got) != 2 || got[1] != rs[1] {
		t.Fatalf("mem table: %+v %v", got, err)
	}
	if _, err := ParseMemTable(MarshalMemTable(nil, make([]Region, 9))); err == nil {
		t.Fatal("9 regions accepted")
	}
	if _, err := ParseMemTable(MarshalMemTable(nil, rs)[:40]); !errors.Is(err, ErrShort) {
		t.Fatalf("short table: %v", err)
	}
	cfg := ConfigReq{Offset: 0, Size: 8, Flags: 0, Data: []byte{3, 0, 0, 0, 0, 0, 0, 0}}
	want := []byte{0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0}
	if !bytes.Equal(cfg.Marshal(nil), want) {
		t.Fatalf("config bytes %x", cfg.Marshal(nil))
	}
	if _, err := ParseConfig([]byte{0, 0, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0}); err == nil {
		t.Fatal("config size beyond payload accepted")
	}
	v, _ := ParseVringFD([]byte{1, 1, 0, 0, 0, 0, 0, 0})
	if v.Index != 1 || !v.NoFD {
		t.Fatalf("vring fd %+v", v)
	}
}

func TestMemory(t *testing.T) {
	const size = 4 << 20
	fd, _ := unix.MemfdCreate("m", unix.MFD_CLOEXEC)
	defer unix.Close(fd)
	unix.Ftruncate(fd, size)
	host, _ := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	defer unix.Munmap(host)
	fd1, _ := unix.Dup(fd)
	fd2, _ := unix.Dup(fd)
	rs := []Region{
		{GuestPhys: 0, Size: 0xa0000, UserAddr: 0x10000000, MmapOffset: 0},
		{GuestPhys: 0xc0000, Size: size - 0xc0000, UserAddr: 0x100c0000, MmapOffset: 0xc0000},
	}
	m, err := Map(rs, []int{fd1, fd2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmap()
	copy(host[0x9fffe:], "ab")
	copy(host[0xc0000:], "cd")
	copy(host[size-2:], "yz")
	check := func(name string, b []byte, err error, want string) {
		t.Helper()
		if err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", name, b, err, want)
		}
	}
	b, err := m.Slice(0x9fffe, 10) // clipped at the region end
	check("end of region 0", b, err, "ab")
	b, err = m.Slice(0xc0000, 2)
	check("start of region 1 (mmap offset)", b, err, "cd")
	b, err = m.Slice(size-2, 100)
	check("end of memory", b, err, "yz")
	b, err = m.VA(0x100c0000, 2)
	check("VA", b, err, "cd")
	for _, a := range []uint64{0xa0000, 0xbffff, size, ^uint64(0)} {
		if _, err := m.Slice(a, 1); !errors.Is(err, ErrUnmapped) {
			t.Errorf("Slice(%#x) = %v", a, err)
		}
	}
	if _, err := m.VA(0x10000000+0x9ffff, 2); err == nil {
		t.Error("VA range across a region end accepted")
	}
	if _, err := m.VA(0x5, 1); !errors.Is(err, ErrUnmapped) {
		t.Error("VA outside accepted")
	}
	fd3, _ := unix.Dup(fd)
	if _, err := Map(rs, []int{fd3}); err == nil {
		t.Error("regions without fds accepted")
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add(Header{Request: GetConfig, Flags: FlagVersion, Size: 20}.Marshal(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err == nil && h.Size > MaxPayload {
			t.Fatal("oversize accepted")
		}
		ParseMemTable(b)
		ParseConfig(b)
		ParseVringAddr(b)
		ParseVringState(b)
	})
}
