// Package virtq is the device side of a virtio 1.x split virtqueue living in shared guest
// memory: it takes descriptor chains from the available ring (following NEXT and INDIRECT),
// returns them through the used ring in batches, and implements VIRTIO_F_EVENT_IDX in both
// directions.
//
// The guest is not trusted: every index, address, length and chain is checked, and a
// malformed ring is reported as an error (the caller stops the device), never a panic or an
// access outside the mapped memory.
package virtq

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Memory resolves guest physical addresses.
type Memory interface {
	// Slice returns up to n bytes at addr contiguous in host memory (at least one byte when
	// n > 0), or an error when addr is not guest memory.
	Slice(addr, n uint64) ([]byte, error)
}

// Descriptor flags and ring flags (virtio 1.x §2.7).
const (
	DescFNext     = 1
	DescFWrite    = 2
	DescFIndirect = 4

	AvailFNoInterrupt = 1
	UsedFNoNotify     = 1
)

// MaxIndirect bounds an indirect table (entries); Linux never uses more than the ring size.
const MaxIndirect = 1024

// MaxSize is the largest queue size of a split virtqueue.
const MaxSize = 32768

// Sizes of the ring areas for a queue of n entries.
func DescSize(n uint16) int  { return 16 * int(n) }
func AvailSize(n uint16) int { return 6 + 2*int(n) }
func UsedSize(n uint16) int  { return 6 + 8*int(n) }

// ErrBadRing wraps every error caused by what the driver put in the ring.
var ErrBadRing = errors.New("virtq: malformed ring")

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadRing, fmt.Sprintf(format, args...))
}

// Chain is one descriptor chain taken from the available ring. Its slices alias guest memory
// and stay valid until the memory table changes. A Chain is reused across Pop calls to avoid
// allocating per packet.
type Chain struct {
	Head     uint16
	Readable [][]byte // driver -> device, in order
	Writable [][]byte // device -> driver, in order
	ReadLen  uint64
	WriteLen uint64
}

// Queue is the device side of one split virtqueue.
type Queue struct {
	mem      Memory
	size     uint16
	desc     []byte
	avail    []byte
	used     []byte
	eventIdx bool
	indirect bool

	lastAvail uint16 // next avail entry to take
	usedIdx   uint16 // next used entry to fill (shadow of used.idx)
	published uint16 // used.idx as last published
	signalled uint16 // used.idx at the last notification decision
	fence     uint32 // target of the full fence
}

// Config describes a queue.
type Config struct {
	Size     uint16
	Desc     []byte // DescSize(Size) bytes
	Avail    []byte // AvailSize(Size) bytes
	Used     []byte // UsedSize(Size) bytes
	Base     uint16 // SET_VRING_BASE: first avail index to process and used index to fill
	EventIdx bool   // VIRTIO_RING_F_EVENT_IDX negotiated
	Indirect bool   // VIRTIO_RING_F_INDIRECT_DESC negotiated
}

// New checks cfg and returns a queue.
func New(mem Memory, cfg Config) (*Queue, error) {
	n := cfg.Size
	if n == 0 || n > MaxSize || n&(n-1) != 0 {
		return nil, fmt.Errorf("virtq: queue size %d is not a power of two up to %d", n, MaxSize)
	}
	if len(cfg.Desc) < DescSize(n) || len(cfg.Avail) < AvailSize(n) || len(cfg.Used) < UsedSize(n) {
		return nil, fmt.Errorf("virtq: ring areas too small for %d entries", n)
	}
	if uintptr(unsafe.Pointer(&cfg.Avail[0]))%2 != 0 || uintptr(unsafe.Pointer(&cfg.Used[0]))%4 != 0 ||
		uintptr(unsafe.Pointer(&cfg.Desc[0]))%16 != 0 {
		return nil, errors.New("virtq: misaligned ring areas")
	}
	return &Queue{
		mem: mem, size: n,
		desc: cfg.Desc[:DescSize(n)], avail: cfg.Avail[:AvailSize(n)], used: cfg.Used[:UsedSize(n)],
		eventIdx: cfg.EventIdx, indirect: cfg.Indirect,
		lastAvail: cfg.Base, usedIdx: cfg.Base, published: cfg.Base, signalled: cfg.Base,
	}, nil
}

// Size is the number of entries.
func (q *Queue) Size() uint16 { return q.size }

// LastAvail is the index of the next available entry to process (the GET_VRING_BASE answer).
func (q *Queue) LastAvail() uint16 { return q.lastAvail }

func load16(b []byte) uint16 {
	p := unsafe.Pointer(&b[0])
	if uintptr(p)%4 == 0 {
		return uint16(atomic.LoadUint32((*uint32)(p)))
	}
	// 2-aligned: an aligned 16-bit load is single-copy atomic; the atomic fence below orders it.
	return *(*uint16)(p)
}

// availIdx reads avail.idx with acquire ordering.
func (q *Queue) availIdx() uint16 {
	p := unsafe.Pointer(&q.avail[0])
	if uintptr(p)%4 == 0 {
		return uint16(atomic.LoadUint32((*uint32)(p)) >> 16)
	}
	v := *(*uint16)(unsafe.Pointer(&q.avail[2]))
	atomic.AddUint32(&q.fence, 0)
	return v
}

// Pending returns how many chains the driver has made available and we have not taken.
func (q *Queue) Pending() (uint16, error) {
	n := q.availIdx() - q.lastAvail
	if n > q.size {
		return 0, bad("avail.idx %d is %d entries ahead of %d in a queue of %d", q.lastAvail+n, n, q.lastAvail, q.size)
	}
	return n, nil
}

// Pop takes the next available chain into c. It returns false when the ring is empty.
func (q *Queue) Pop(c *Chain) (bool, error) {
	n, err := q.Pending()
	if err != nil || n == 0 {
		return false, err
	}
	slot := 4 + 2*int(q.lastAvail%q.size)
	head := binary.LittleEndian.Uint16(q.avail[slot:])
	if head >= q.size {
		return false, bad("avail ring entry %d names descriptor %d of %d", q.lastAvail, head, q.size)
	}
	if err := q.walk(head, c); err != nil {
		return false, err
	}
	q.lastAvail++
	return true, nil
}

func (q *Queue) walk(head uint16, c *Chain) error {
	c.Head = head
	c.Readable = c.Readable[:0]
	c.Writable = c.Writable[:0]
	c.ReadLen, c.WriteLen = 0, 0
	table, tsize := q.desc, uint32(q.size)
	idx, count := uint32(head), uint32(0)
	indirect := false
	for {
		count++
		if count > tsize {
			return bad("descriptor chain from head %d loops or exceeds %d entries", head, tsize)
		}
		d := table[16*idx : 16*idx+16]
		addr := binary.LittleEndian.Uint64(d)
		length := binary.LittleEndian.Uint32(d[8:])
		flags := binary.LittleEndian.Uint16(d[12:])
		next := binary.LittleEndian.Uint16(d[14:])
		if flags&DescFIndirect != 0 {
			switch {
			case !q.indirect:
				return bad("indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC")
			case indirect:
				return bad("nested indirect descriptor")
			case flags&DescFNext != 0:
				return bad("indirect descriptor with NEXT set")
			case length == 0 || length%16 != 0 || length/16 > MaxIndirect:
				return bad("indirect table of %d bytes", length)
			}
			t, err := q.mem.Slice(addr, uint64(length))
			if err != nil || len(t) != int(length) {
				return bad("indirect table at %#x+%d is not in one guest memory region", addr, length)
			}
			if uintptr(unsafe.Pointer(&t[0]))%2 != 0 {
				return bad("misaligned indirect table at %#x", addr)
			}
			table, tsize, idx, count, indirect = t, length/16, 0, 0, true
			continue
		}
		if addr+uint64(length) < addr {
			return bad("descriptor %#x+%d wraps the address space", addr, length)
		}
		write := flags&DescFWrite != 0
		if !write && len(c.Writable) > 0 {
			return bad("device-readable descriptor after a device-writable one")
		}
		for rest := uint64(length); rest > 0; {
			s, err := q.mem.Slice(addr, rest)
			if err != nil {
				return bad("descriptor %#x+%d is outside guest memory", addr, length)
			}
			if write {
				c.Writable = append(c.Writable, s)
			} else {
				c.Readable = append(c.Readable, s)
			}
			addr += uint64(len(s))
			rest -= uint64(len(s))
		}
		if write {
			c.WriteLen += uint64(length)
		} else {
			c.ReadLen += uint64(length)
		}
		if flags&DescFNext == 0 {
			return nil
		}
		idx = uint32(next)
		if idx >= tsize {
			return bad("descriptor chain from head %d links to %d of %d", head, next, tsize)
		}
	}
}

// Push returns a chain to the driver with the number of bytes written into it. The entry
// becomes visible to the driver at the next Flush.
func (q *Queue) Push(head uint16, written uint32) {
	e := q.used[4+8*int(q.usedIdx%q.size):]
	binary.LittleEndian.PutUint32(e, uint32(head))
	binary.LittleEndian.PutUint32(e[4:], written)
	q.usedIdx++
}

// Flush publishes the pushed entries and reports whether the driver wants an interrupt.
func (q *Queue) Flush() bool {
	if q.usedIdx == q.published {
		return false
	}
	// used.flags (low half) belongs to the device and stays 0; one aligned 32-bit store
	// publishes the index after the entries (Go atomics are sequentially consistent).
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&q.used[0])), uint32(q.usedIdx)<<16)
	q.published = q.usedIdx
	if !q.eventIdx {
		return load16(q.avail)&AvailFNoInterrupt == 0
	}
	old, nw := q.signalled, q.usedIdx
	q.signalled = nw
	ev := binary.LittleEndian.Uint16(q.avail[4+2*int(q.size):])
	return nw-ev-1 < nw-old
}

// ArmNotify asks the driver to kick when it makes new chains available and reports whether
// some already are (so the caller must keep processing instead of sleeping). With EVENT_IDX
// this publishes avail_event = last_avail followed by a full fence, which closes the race
// with a driver adding a buffer just before it.
func (q *Queue) ArmNotify() (bool, error) {
	if q.eventIdx {
		binary.LittleEndian.PutUint16(q.used[4+8*int(q.size):], q.lastAvail)
		atomic.AddUint32(&q.fence, 1) // LOCK-prefixed RMW: store->load fence
	}
	n, err := q.Pending()
	return n > 0, err
}
