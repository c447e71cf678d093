package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// memfd returns a memfd of size bytes, closed at the end of the test.
func memfd(t testing.TB, size int64) int {
	t.Helper()
	fd, err := unix.MemfdCreate("guest", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, size); err != nil {
		t.Fatal(err)
	}
	return fd
}

// dups returns n duplicates of fd (Map takes ownership of its fds).
func dups(t testing.TB, fd, n int) []int {
	t.Helper()
	fds := make([]int, n)
	for i := range fds {
		d, err := unix.Dup(fd)
		if err != nil {
			t.Fatal(err)
		}
		fds[i] = d
	}
	return fds
}

// A memory table whose region runs past the end of its fd used to be mapped as is: the
// first touch of the missing pages killed the device with SIGBUS.
func TestMapRefusesRegionBeyondFD(t *testing.T) {
	fd := memfd(t, 1<<20)
	cases := []struct {
		name string
		r    Region
		want string
	}{
		{"size beyond the fd", Region{Size: 2 << 20},
			"vhostuser: memory region 0 ends at offset 2097152 of its fd, but the fd holds only 1048576 bytes: the front-end sent a memory region larger than its fd"},
		{"offset beyond the fd", Region{Size: 4096, MmapOffset: 1 << 20},
			"vhostuser: memory region 0 ends at offset 1052672 of its fd, but the fd holds only 1048576 bytes: the front-end sent a memory region larger than its fd"},
		{"one byte too many", Region{Size: 1<<20 - 4095, MmapOffset: 4096},
			"vhostuser: memory region 0 ends at offset 1048577 of its fd, but the fd holds only 1048576 bytes: the front-end sent a memory region larger than its fd"},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Map([]Region{tt.r}, dups(t, fd, 1))
			if err == nil {
				m.Unmap()
				t.Fatalf("Map(%+v) over a 1 MiB memfd succeeded; want an error", tt.r)
			}
			if err.Error() != tt.want {
				t.Fatalf("Map error:\n got %s\nwant %s", err, tt.want)
			}
		})
	}
	// Exactly the fd's size is fine, and every byte of it is usable.
	m, err := Map([]Region{{Size: 1<<20 - 4096, MmapOffset: 4096}}, dups(t, fd, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmap()
	b, err := m.Slice(1<<20-4097, 1)
	if err != nil || len(b) != 1 {
		t.Fatalf("last byte: %v %v", b, err)
	}
	b[0] = 1

	// The second region is checked as well, and the first one's mapping is released.
	_, err = Map([]Region{{Size: 4096}, {GuestPhys: 4096, Size: 4096, MmapOffset: 1<<20 - 1}}, dups(t, fd, 2))
	if err == nil || err.Error() != "vhostuser: memory region 1 ends at offset 1052671 of its fd, but the fd holds only 1048576 bytes: the front-end sent a memory region larger than its fd" {
		t.Fatalf("second region: %v", err)
	}

	// A truncated memfd after a good table stays a front-end bug we cannot see; a
	// pipe is not guest memory at all.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	_, err = Map([]Region{{Size: 4096}}, []int{p[0]})
	if err == nil || err.Error() != "vhostuser: memory region 0: its fd is not a regular file (mode 010600); the front-end must share memfd or file-backed memory" {
		t.Fatalf("pipe as guest memory: %v", err)
	}
}

// FuzzMemoryTable maps arbitrary multi-region memory tables (overlapping regions, gaps,
// huge sizes, offsets beyond the fd) over one memfd and checks Slice and VA against a
// model: Map succeeds exactly when every region is valid and inside the fd; a translation
// returns the first region holding the address, with the model's length, and the bytes
// are the fd's bytes at mmap_offset+offset. Touching every returned slice at both ends
// means a bad mapping faults here (SIGBUS) instead of passing.
func FuzzMemoryTable(f *testing.F) {
	table := func(rs ...Region) []byte { return MarshalMemTable(nil, rs) }
	// Two regions of one fd with an mmap offset, as QEMU sends for a q35 below 4 GiB.
	f.Add(table(Region{0, 0xa000, 0x7f0000000000, 0}, Region{0xc000, 0x4000, 0x7f000000c000, 0xc000}), uint32(0x10000), false, []byte{})
	// Overlapping guest ranges and user ranges, a gap.
	f.Add(table(Region{0, 0x8000, 0x1000, 0}, Region{0x4000, 0x8000, 0x2000, 0x1000}, Region{0x20000, 0x1000, 0x1000, 0}), uint32(0x10000), false, make([]byte, 16))
	// A huge size, an offset beyond the fd, sizes that wrap.
	f.Add(table(Region{0, 1 << 40, 0, 0}), uint32(4096), false, []byte{})
	f.Add(table(Region{0, 4096, 0, 1 << 20}), uint32(4096), false, []byte{})
	f.Add(table(Region{^uint64(0) - 10, 4096, 0, 0}, Region{0, 4096, ^uint64(0), 0}), uint32(8192), false, []byte{})
	// Small arbitrary values (reduced modulo the fd size).
	f.Add(table(Region{1, 2, 3, 4}, Region{5, 6, 7, 8}, Region{9, 10, 11, 12}), uint32(3000), true, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Fuzz(func(t *testing.T, tab []byte, fdSize uint32, reduce bool, queries []byte) {
		rs, err := ParseMemTable(tab)
		if err != nil {
			return
		}
		size := uint64(fdSize % (256 << 10))
		if reduce {
			// Keep values near the fd so that most tables map and translate.
			for i := range rs {
				r := &rs[i]
				r.GuestPhys %= 4 * (size + 1)
				r.Size %= size + 2
				r.UserAddr %= 4 * (size + 1)
				r.MmapOffset %= size + 2
			}
		}
		fd := memfd(t, int64(size))
		valid := true
		for _, r := range rs {
			valid = valid && r.Size > 0 && r.Size <= 1<<40 && r.MmapOffset <= 1<<40 &&
				r.GuestPhys+r.Size >= r.GuestPhys && r.UserAddr+r.Size >= r.UserAddr &&
				r.MmapOffset+r.Size <= size
		}
		m, err := Map(rs, dups(t, fd, len(rs)))
		if (err == nil) != valid {
			t.Fatalf("Map(%+v) over %d bytes: err %v, model says valid=%v", rs, size, err, valid)
		}
		if err != nil {
			return
		}
		defer m.Unmap()

		addrs := []uint64{0, ^uint64(0)}
		for _, r := range rs {
			for _, base := range []uint64{r.GuestPhys, r.UserAddr} {
				addrs = append(addrs, base-1, base, base+r.Size/2, base+r.Size-1, base+r.Size)
			}
		}
		for len(queries) >= 8 {
			addrs = append(addrs, binary.LittleEndian.Uint64(queries))
			queries = queries[8:]
		}
		marker := byte(0)
		check := func(what string, addr, n uint64, b []byte, err error, r *Region, base uint64, clip bool) {
			t.Helper()
			if r == nil {
				if !errors.Is(err, ErrUnmapped) {
					t.Fatalf("%s(%#x, %d) outside every region: %v, want ErrUnmapped", what, addr, n, err)
				}
				return
			}
			off := addr - base
			want := n
			if rest := r.Size - off; n > rest {
				if !clip {
					if err == nil {
						t.Fatalf("%s(%#x, %d) crosses the end of %+v but succeeded", what, addr, n, *r)
					}
					return
				}
				want = rest
			}
			if err != nil || uint64(len(b)) != want || uint64(cap(b)) != want {
				t.Fatalf("%s(%#x, %d) in %+v: len %d cap %d, %v; want len %d", what, addr, n, *r, len(b), cap(b), err, want)
			}
			for _, i := range []uint64{0, want - 1} {
				if want == 0 {
					break
				}
				marker++
				b[i] = marker
				var got [1]byte
				if _, err := unix.Pread(fd, got[:], int64(r.MmapOffset+off+i)); err != nil || got[0] != marker {
					t.Fatalf("%s(%#x, %d) byte %d is not byte %d of the fd (%v)", what, addr, n, i, r.MmapOffset+off+i, err)
				}
			}
		}
		for _, a := range addrs {
			for _, n := range []uint64{0, 1, 2, 4096, 1 << 20, ^uint64(0)} {
				var gr, vr *Region
				for i := range rs {
					if r := &rs[i]; gr == nil && a >= r.GuestPhys && a-r.GuestPhys < r.Size {
						gr = r
					}
					if r := &rs[i]; vr == nil && a >= r.UserAddr && a-r.UserAddr < r.Size {
						vr = r
					}
				}
				b, err := m.Slice(a, n)
				check("Slice", a, n, b, err, gr, gpa(gr), true)
				b, err = m.VA(a, n)
				check("VA", a, n, b, err, vr, uva(vr), false)
			}
		}
		if got := fmt.Sprint(m.Regions()); got != fmt.Sprint(rs) {
			t.Fatalf("Regions() = %s; want %s", got, fmt.Sprint(rs))
		}
	})
}

func gpa(r *Region) uint64 {
	if r == nil {
		return 0
	}
	return r.GuestPhys
}

func uva(r *Region) uint64 {
	if r == nil {
		return 0
	}
	return r.UserAddr
}
