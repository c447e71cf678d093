package vhostuser

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Memory is the guest memory shared by the front-end, one mapping per SET_MEM_TABLE region.
// Descriptor addresses are guest physical addresses (Slice); ring addresses given by
// SET_VRING_ADDR are front-end virtual addresses (VA).
type Memory struct {
	regions []mapped
}

type mapped struct {
	Region
	mapping []byte // whole mmap, from file offset 0
	data    []byte // mapping[MmapOffset : MmapOffset+Size]
}

// ErrUnmapped is returned for addresses outside every region.
var ErrUnmapped = errors.New("vhostuser: address outside guest memory")

// Map maps the regions. It takes ownership of fds (one per region, in order) and closes them:
// the mappings keep the memory alive.
func Map(rs []Region, fds []int) (*Memory, error) {
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	if len(rs) != len(fds) {
		return nil, fmt.Errorf("vhostuser: SET_MEM_TABLE has %d regions but %d fds", len(rs), len(fds))
	}
	m := &Memory{}
	for i, r := range rs {
		if r.Size == 0 || r.Size > 1<<40 || r.MmapOffset > 1<<40 ||
			r.GuestPhys+r.Size < r.GuestPhys || r.UserAddr+r.Size < r.UserAddr {
			m.Unmap()
			return nil, fmt.Errorf("vhostuser: invalid memory region %d: %+v", i, r)
		}
		// A mapping longer than its file maps pages that fault with SIGBUS on first touch,
		// in the middle of a ring walk: refuse such a table up front instead.
		var st unix.Stat_t
		if err := unix.Fstat(fds[i], &st); err != nil {
			m.Unmap()
			return nil, fmt.Errorf("vhostuser: memory region %d: fstat of its fd: %w", i, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			m.Unmap()
			return nil, fmt.Errorf("vhostuser: memory region %d: its fd is not a regular file (mode %#o); the front-end must share memfd or file-backed memory", i, st.Mode)
		}
		if end := r.MmapOffset + r.Size; st.Size < 0 || uint64(st.Size) < end {
			m.Unmap()
			return nil, fmt.Errorf("vhostuser: memory region %d ends at offset %d of its fd, but the fd holds only %d bytes: the front-end sent a memory region larger than its fd", i, end, st.Size)
		}
		b, err := unix.Mmap(fds[i], 0, int(r.Size+r.MmapOffset), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			m.Unmap()
			return nil, fmt.Errorf("vhostuser: mapping guest memory region %d (%d bytes): %w", i, r.Size, err)
		}
		m.regions = append(m.regions, mapped{Region: r, mapping: b, data: b[r.MmapOffset : r.MmapOffset+r.Size]})
	}
	return m, nil
}

// Unmap releases all mappings. The Memory must not be used afterwards.
func (m *Memory) Unmap() error {
	var errs []error
	for _, r := range m.regions {
		if err := unix.Munmap(r.mapping); err != nil {
			errs = append(errs, err)
		}
	}
	m.regions = nil
	return errors.Join(errs...)
}

// Regions returns the regions in the table.
func (m *Memory) Regions() []Region {
	rs := make([]Region, len(m.regions))
	for i, r := range m.regions {
		rs[i] = r.Region
	}
	return rs
}

// Slice returns guest-physical memory at addr: at most n bytes, contiguous within one region,
// and at least one byte when n > 0. A shorter slice means the range continues in the next
// region (the caller asks again at addr+len).
func (m *Memory) Slice(addr, n uint64) ([]byte, error) {
	for i := range m.regions {
		r := &m.regions[i]
		if addr >= r.GuestPhys && addr-r.GuestPhys < r.Size {
			off := addr - r.GuestPhys
			end := r.Size
			if n < end-off {
				end = off + n
			}
			return r.data[off:end:end], nil
		}
	}
	return nil, ErrUnmapped
}

// VA returns exactly n bytes at front-end virtual address addr; the range must lie within one region.
func (m *Memory) VA(addr, n uint64) ([]byte, error) {
	for i := range m.regions {
		r := &m.regions[i]
		if addr >= r.UserAddr && addr-r.UserAddr < r.Size {
			off := addr - r.UserAddr
			if n > r.Size-off {
				return nil, fmt.Errorf("vhostuser: %d bytes at %#x cross the end of a memory region", n, addr)
			}
			return r.data[off : off+n : off+n], nil
		}
	}
	return nil, ErrUnmapped
}
