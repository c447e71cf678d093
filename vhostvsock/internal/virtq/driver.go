package virtq

import (
	"encoding/binary"
	"errors"
	"sync/atomic"
	"unsafe"
)

// Driver is the driver (guest) side of a split virtqueue over a flat guest memory where guest
// physical address a is Mem[a]. It exists for tests and fake front-ends: each descriptor i
// owns a fixed buffer of BufSize bytes at BufBase + i*BufSize.
type Driver struct {
	Mem      []byte
	Size     uint16
	Desc     uint64 // guest physical addresses of the ring areas
	Avail    uint64
	Used     uint64
	BufBase  uint64
	BufSize  uint32
	EventIdx bool

	free     []uint16
	availIdx uint16
	lastUsed uint16
	chainLen map[uint16][]uint16 // head -> descriptors of the chain
}

// Layout returns a driver with the ring areas and buffers laid out from base (16-aligned):
// it needs Footprint bytes.
func Layout(mem []byte, base uint64, size uint16, bufSize uint32) *Driver {
	d := &Driver{Mem: mem, Size: size, Desc: base, BufSize: bufSize}
	d.Avail = d.Desc + uint64(DescSize(size))
	d.Used = (d.Avail + uint64(AvailSize(size)) + 4095) &^ 4095
	d.BufBase = (d.Used + uint64(UsedSize(size)) + 4095) &^ 4095
	d.Reset()
	return d
}

// Footprint is the number of bytes from Desc to the end of the last buffer.
func (d *Driver) Footprint() uint64 {
	return d.BufBase + uint64(d.Size)*uint64(d.BufSize) - d.Desc
}

// Reset frees every descriptor and zeroes the indices.
func (d *Driver) Reset() {
	d.free = d.free[:0]
	for i := int(d.Size) - 1; i >= 0; i-- {
		d.free = append(d.free, uint16(i))
	}
	d.availIdx, d.lastUsed = 0, 0
	d.chainLen = map[uint16][]uint16{}
}

// SetBase starts both indices at base (as SET_VRING_BASE would tell the device).
func (d *Driver) SetBase(base uint16) {
	d.availIdx, d.lastUsed = base, base
	binary.LittleEndian.PutUint16(d.Mem[d.Avail+2:], base)
	binary.LittleEndian.PutUint16(d.Mem[d.Used+2:], base)
}

// Buf returns descriptor i's buffer and its guest address.
func (d *Driver) Buf(i uint16) ([]byte, uint64) {
	a := d.BufBase + uint64(i)*uint64(d.BufSize)
	return d.Mem[a : a+uint64(d.BufSize)], a
}

// SetDesc writes descriptor i raw.
func (d *Driver) SetDesc(i uint16, addr uint64, length uint32, flags, next uint16) {
	WriteDesc(d.Mem[d.Desc+16*uint64(i):], addr, length, flags, next)
}

// WriteDesc encodes one descriptor into b.
func WriteDesc(b []byte, addr uint64, length uint32, flags, next uint16) {
	binary.LittleEndian.PutUint64(b, addr)
	binary.LittleEndian.PutUint32(b[8:], length)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
}

// PublishRaw makes head available without any bookkeeping (for hostile-ring tests).
func (d *Driver) PublishRaw(head uint16) {
	binary.LittleEndian.PutUint16(d.Mem[d.Avail+4+2*uint64(d.availIdx%d.Size):], head)
	d.availIdx++
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&d.Mem[d.Avail])), uint32(d.availIdx)<<16)
}

// SetAvailIdx writes avail.idx directly (for hostile-ring tests).
func (d *Driver) SetAvailIdx(v uint16) {
	d.availIdx = v
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&d.Mem[d.Avail])), uint32(v)<<16)
}

// ErrFull is returned when not enough descriptors are free.
var ErrFull = errors.New("virtq: driver ring full")

// Seg is one element of a chain: readable data (Data) or a writable buffer of WriteLen bytes.
type Seg struct {
	Data     []byte
	WriteLen uint32
}

// Add makes a chain available: one descriptor per segment, or one indirect descriptor whose
// table and data live in the head's buffer when indirect is true.
func (d *Driver) Add(segs []Seg, indirect bool) (uint16, error) {
	if indirect {
		if len(d.free) < 1 {
			return 0, ErrFull
		}
		head := d.pop()
		buf, base := d.Buf(head)
		tbl := 16 * len(segs)
		off := uint64(tbl)
		for i, s := range segs {
			flags := uint16(0)
			if i+1 < len(segs) {
				flags |= DescFNext
			}
			n := uint32(len(s.Data))
			if s.Data == nil {
				n = s.WriteLen
				flags |= DescFWrite
			} else {
				copy(buf[off:], s.Data)
			}
			WriteDesc(buf[16*i:], base+off, n, flags, uint16(i+1))
			off += uint64(n)
		}
		if off > uint64(d.BufSize) {
			d.free = append(d.free, head)
			return 0, errors.New("virtq: indirect chain larger than a buffer")
		}
		d.SetDesc(head, base, uint32(tbl), DescFIndirect, 0)
		d.chainLen[head] = []uint16{head}
		d.PublishRaw(head)
		return head, nil
	}
	if len(d.free) < len(segs) {
		return 0, ErrFull
	}
	ids := make([]uint16, len(segs))
	for i := range segs {
		ids[i] = d.pop()
	}
	for i, s := range segs {
		buf, addr := d.Buf(ids[i])
		flags := uint16(0)
		var next uint16
		if i+1 < len(segs) {
			flags |= DescFNext
			next = ids[i+1]
		}
		n := uint32(len(s.Data))
		if s.Data == nil {
			n = s.WriteLen
			flags |= DescFWrite
		} else {
			copy(buf, s.Data)
		}
		d.SetDesc(ids[i], addr, n, flags, next)
	}
	d.chainLen[ids[0]] = ids
	d.PublishRaw(ids[0])
	return ids[0], nil
}

func (d *Driver) pop() uint16 {
	i := d.free[len(d.free)-1]
	d.free = d.free[:len(d.free)-1]
	return i
}

// Free reports how many descriptors are free.
func (d *Driver) Free() int { return len(d.free) }

// UsedElem is one returned chain.
type UsedElem struct {
	Head uint16
	Len  uint32
	Data []byte // for chains with writable segments: the first Len bytes written, gathered
}

// Collect takes the chains the device returned, frees their descriptors and gathers the
// written bytes of writable chains built by Add.
func (d *Driver) Collect() []UsedElem {
	idx := uint16(atomic.LoadUint32((*uint32)(unsafe.Pointer(&d.Mem[d.Used]))) >> 16)
	var out []UsedElem
	for ; d.lastUsed != idx; d.lastUsed++ {
		e := d.Mem[d.Used+4+8*uint64(d.lastUsed%d.Size):]
		u := UsedElem{Head: uint16(binary.LittleEndian.Uint32(e)), Len: binary.LittleEndian.Uint32(e[4:])}
		ids := d.chainLen[u.Head]
		delete(d.chainLen, u.Head)
		rest := int(u.Len)
		for _, id := range ids {
			dd := d.Mem[d.Desc+16*uint64(id):]
			flags := binary.LittleEndian.Uint16(dd[12:])
			if flags&DescFIndirect != 0 {
				buf, _ := d.Buf(id)
				n := binary.LittleEndian.Uint32(dd[8:]) / 16
				for k := uint32(0); k < n && rest > 0; k++ {
					t := buf[16*k:]
					a, l := binary.LittleEndian.Uint64(t), binary.LittleEndian.Uint32(t[8:])
					if binary.LittleEndian.Uint16(t[12:])&DescFWrite != 0 {
						m := min(int(l), rest)
						u.Data = append(u.Data, d.Mem[a:a+uint64(m)]...)
						rest -= m
					}
				}
			} else if flags&DescFWrite != 0 && rest > 0 {
				a, l := binary.LittleEndian.Uint64(dd), binary.LittleEndian.Uint32(dd[8:])
				m := min(int(l), rest)
				u.Data = append(u.Data, d.Mem[a:a+uint64(m)]...)
				rest -= m
			}
			d.free = append(d.free, id)
		}
		out = append(out, u)
	}
	return out
}

// UsedEvent sets used_event (EVENT_IDX: interrupt me when used.idx passes v).
func (d *Driver) UsedEvent(v uint16) {
	binary.LittleEndian.PutUint16(d.Mem[d.Avail+4+2*uint64(d.Size):], v)
}

// AvailEvent reads the device's avail_event.
func (d *Driver) AvailEvent() uint16 {
	return binary.LittleEndian.Uint16(d.Mem[d.Used+4+8*uint64(d.Size):])
}

// AvailIdx is the driver's avail.idx.
func (d *Driver) AvailIdx() uint16 { return d.availIdx }

// NeedKick reports whether the device asked for a notification (EVENT_IDX) after the driver
// moved avail.idx from old to the current value; without EVENT_IDX, always.
func (d *Driver) NeedKick(old uint16) bool {
	if !d.EventIdx {
		return true
	}
	atomic.AddUint32(new(uint32), 1)
	ev := d.AvailEvent()
	nw := d.availIdx
	return nw-ev-1 < nw-old
}

// FlatMemory is a Memory over a byte slice at guest address 0 (for tests).
type FlatMemory []byte

// Slice implements Memory.
func (m FlatMemory) Slice(addr, n uint64) ([]byte, error) {
	if addr >= uint64(len(m)) {
		return nil, errors.New("virtq: address outside test memory")
	}
	end := uint64(len(m))
	if n < end-addr {
		end = addr + n
	}
	return m[addr:end:end], nil
}

// LastUsed is the next used index the driver will read.
func (d *Driver) LastUsed() uint16 { return d.lastUsed }
