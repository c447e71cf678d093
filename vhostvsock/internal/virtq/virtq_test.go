package virtq

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

const testMem = 1 << 20

func newPair(t testing.TB, size uint16, base uint16, indirect, eventIdx bool) (*Driver, *Queue, FlatMemory) {
	t.Helper()
	mem := FlatMemory(make([]byte, testMem))
	d := Layout(mem, 0x1000, size, 4096)
	d.EventIdx = eventIdx
	d.SetBase(base)
	q, err := New(mem, Config{
		Size: size, Desc: mem[d.Desc:], Avail: mem[d.Avail:], Used: mem[d.Used:],
		Base: base, EventIdx: eventIdx, Indirect: indirect,
	})
	if err != nil {
		t.Fatal(err)
	}
	return d, q, mem
}

func flat(segs [][]byte) []byte { return bytes.Join(segs, nil) }

func TestChains(t *testing.T) {
	for _, indirect := range []bool{false, true} {
		d, q, _ := newPair(t, 8, 0, indirect, false)
		head, err := d.Add([]Seg{{Data: []byte("head")}, {Data: []byte("er+payload")}, {WriteLen: 100}}, indirect)
		if err != nil {
			t.Fatal(err)
		}
		var c Chain
		ok, err := q.Pop(&c)
		if !ok || err != nil {
			t.Fatalf("Pop = %v, %v", ok, err)
		}
		if c.Head != head || string(flat(c.Readable)) != "header+payload" || c.ReadLen != 14 || c.WriteLen != 100 {
			t.Fatalf("indirect=%v: chain %+v", indirect, c)
		}
		copy(c.Writable[0], "reply")
		q.Push(c.Head, 5)
		if !q.Flush() {
			t.Fatal("no interrupt without EVENT_IDX and NO_INTERRUPT clear")
		}
		u := d.Collect()
		if len(u) != 1 || u[0].Head != head || string(u[0].Data) != "reply" {
			t.Fatalf("used %+v", u)
		}
		if ok, _ := q.Pop(&c); ok {
			t.Fatal("Pop on an empty ring")
		}
	}
}

func TestIndexWrap(t *testing.T) {
	d, q, _ := newPair(t, 4, 65530, true, true)
	var c Chain
	for i := range 40 {
		payload := []byte{byte(i)}
		if _, err := d.Add([]Seg{{Data: payload}}, i%2 == 0); err != nil {
			t.Fatal(err)
		}
		ok, err := q.Pop(&c)
		if !ok || err != nil || !bytes.Equal(flat(c.Readable), payload) {
			t.Fatalf("step %d: %v %v %q", i, ok, err, flat(c.Readable))
		}
		q.Push(c.Head, 0)
		q.Flush()
		if len(d.Collect()) != 1 {
			t.Fatalf("step %d: nothing used", i)
		}
	}
	if base := uint16(65530); q.LastAvail() != base+40 {
		t.Fatalf("LastAvail = %d", q.LastAvail())
	}
}

func TestHostileRings(t *testing.T) {
	type setup func(d *Driver, mem FlatMemory)
	cases := []struct {
		name     string
		indirect bool
		fn       setup
	}{
		{"loop", false, func(d *Driver, _ FlatMemory) {
			d.SetDesc(0, 0x100, 1, DescFNext, 1)
			d.SetDesc(1, 0x100, 1, DescFNext, 0)
			d.PublishRaw(0)
		}},
		{"self loop", false, func(d *Driver, _ FlatMemory) {
			d.SetDesc(3, 0x100, 1, DescFNext, 3)
			d.PublishRaw(3)
		}},
		{"next past table", false, func(d *Driver, _ FlatMemory) {
			d.SetDesc(0, 0x100, 1, DescFNext, 8)
			d.PublishRaw(0)
		}},
		{"head past table", false, func(d *Driver, _ FlatMemory) { d.PublishRaw(8) }},
		{"address out of range", false, func(d *Driver, _ FlatMemory) {
			d.SetDesc(0, testMem+16, 1, 0, 0)
			d.PublishRaw(0)
		}},
		{"length past the end", false, func(d *Driver, _ FlatMemory) {
			d.SetDesc(0, testMem-16, 64, 0, 0)
			d.PublishRaw(0)
		}},
		{"length overflow", false, func(d *Driver, _ FlatMemory) {
			d.SetDesc(0, ^uint64(0)-10, 100, 0, 0)
			d.PublishRaw(0)
		}},
		{"avail idx jump", false, func(d *Driver, _ FlatMemory) { d.SetAvailIdx(100) }},
		{"readable after writable", false, func(d *Driver, _ FlatMemory) {
			d.SetDesc(0, 0x100, 1, DescFNext|DescFWrite, 1)
			d.SetDesc(1, 0x100, 1, 0, 0)
			d.PublishRaw(0)
		}},
		{"indirect not negotiated", false, func(d *Driver, _ FlatMemory) {
			d.SetDesc(0, 0x2000, 16, DescFIndirect, 0)
			d.PublishRaw(0)
		}},
		{"indirect with next", true, func(d *Driver, _ FlatMemory) {
			d.SetDesc(0, 0x2000, 16, DescFIndirect|DescFNext, 1)
			d.PublishRaw(0)
		}},
		{"indirect odd length", true, func(d *Driver, _ FlatMemory) {
			d.SetDesc(0, 0x2000, 17, DescFIndirect, 0)
			d.PublishRaw(0)
		}},
		{"indirect too long", true, func(d *Driver, _ FlatMemory) {
			d.SetDesc(0, 0x2000, 16*(MaxIndirect+1), DescFIndirect, 0)
			d.PublishRaw(0)
		}},
		{"indirect out of range", true, func(d *Driver, _ FlatMemory) {
			d.SetDesc(0, testMem-8, 16, DescFIndirect, 0)
			d.PublishRaw(0)
		}},
		{"nested indirect", true, func(d *Driver, mem FlatMemory) {
			WriteDesc(mem[0x8000:], 0x8000, 16, DescFIndirect, 0)
			d.SetDesc(0, 0x8000, 16, DescFIndirect, 0)
			d.PublishRaw(0)
		}},
		{"indirect loop", true, func(d *Driver, mem FlatMemory) {
			WriteDesc(mem[0x8000:], 0x100, 1, DescFNext, 1)
			WriteDesc(mem[0x8010:], 0x100, 1, DescFNext, 0)
			d.SetDesc(0, 0x8000, 32, DescFIndirect, 0)
			d.PublishRaw(0)
		}},
		{"indirect next past table", true, func(d *Driver, mem FlatMemory) {
			WriteDesc(mem[0x8000:], 0x100, 1, DescFNext, 2)
			WriteDesc(mem[0x8010:], 0x100, 1, 0, 0)
			d.SetDesc(0, 0x8000, 32, DescFIndirect, 0)
			d.PublishRaw(0)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, q, mem := newPair(t, 8, 0, tc.indirect, false)
			tc.fn(d, mem)
			var c Chain
			ok, err := q.Pop(&c)
			if ok || !errors.Is(err, ErrBadRing) {
				t.Fatalf("Pop = %v, %v; want ErrBadRing", ok, err)
			}
		})
	}
}

// A descriptor spanning two memory regions is returned as two segments.
type twoRegions struct{ FlatMemory }

func (m twoRegions) Slice(addr, n uint64) ([]byte, error) {
	const split = 0x9000
	if addr < split && addr+n > split {
		n = split - addr
	}
	return m.FlatMemory.Slice(addr, n)
}

func TestCrossRegion(t *testing.T) {
	mem := FlatMemory(make([]byte, testMem))
	d := Layout(mem, 0x1000, 4, 64)
	q, _ := New(twoRegions{mem}, Config{Size: 4, Desc: mem[d.Desc:], Avail: mem[d.Avail:], Used: mem[d.Used:]})
	copy(mem[0x8ff0:], "0123456789abcdefghijklmnopqrstuv")
	d.SetDesc(0, 0x8ff0, 32, 0, 0)
	d.PublishRaw(0)
	var c Chain
	if ok, err := q.Pop(&c); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if len(c.Readable) != 2 || string(flat(c.Readable)) != "0123456789abcdefghijklmnopqrstuv" {
		t.Fatalf("segments %q", c.Readable)
	}
}

func TestEventIdx(t *testing.T) {
	d, q, _ := newPair(t, 8, 0, false, true)
	// Device armed with an empty ring: the driver's next add must kick.
	if more, err := q.ArmNotify(); more || err != nil {
		t.Fatal(more, err)
	}
	old := d.AvailIdx()
	d.Add([]Seg{{Data: []byte("a")}}, false)
	if !d.NeedKick(old) {
		t.Fatal("driver not asked to kick after the device armed")
	}
	// The driver adds more before the device re-arms: no kick needed, and ArmNotify must
	// report the pending chain instead of letting the device sleep (lost wakeup).
	old = d.AvailIdx()
	d.Add([]Seg{{Data: []byte("b")}}, false)
	if d.NeedKick(old) {
		t.Fatal("kick requested although avail_event was not passed")
	}
	var c Chain
	q.Pop(&c)
	q.Push(c.Head, 0)
	if more, _ := q.ArmNotify(); !more {
		t.Fatal("ArmNotify missed a pending chain")
	}
	q.Pop(&c)
	q.Push(c.Head, 0)
	// used_event: interrupt only when used.idx passes it.
	d.UsedEvent(5)
	if q.Flush() {
		t.Fatal("interrupt before used_event was reached")
	}
	d.Collect()
	for range 4 {
		d.Add([]Seg{{Data: []byte("x")}}, false)
		q.Pop(&c)
		q.Push(c.Head, 0)
	}
	if !q.Flush() { // used.idx goes 2 -> 6, passing 5
		t.Fatal("no interrupt after passing used_event")
	}
	q.ArmNotify()
	if d.AvailEvent() != q.LastAvail() {
		t.Fatal("avail_event not published")
	}
}

func FuzzPop(f *testing.F) {
	seed := make([]byte, 8*16+2)
	WriteDesc(seed, 0x100, 44, DescFNext, 1)
	WriteDesc(seed[16:], 0x3000, 32, DescFIndirect, 0)
	f.Add(seed, uint16(2), true)
	f.Add([]byte{}, uint16(1), false)
	f.Fuzz(func(t *testing.T, table []byte, availIdx uint16, indirect bool) {
		mem := FlatMemory(make([]byte, 64<<10))
		d := Layout(mem, 0x1000, 8, 64)
		copy(mem[d.Desc:d.Desc+16*8], table)
		copy(mem[0x3000:], table) // also usable as an indirect table
		for i := range uint16(8) {
			binary.LittleEndian.PutUint16(mem[d.Avail+4+2*uint64(i):], i^binary.LittleEndian.Uint16(append(table, 0, 0)[2*(int(i)%max(1, len(table)/2)):]))
		}
		d.SetAvailIdx(availIdx)
		q, err := New(mem, Config{Size: 8, Desc: mem[d.Desc:], Avail: mem[d.Avail:], Used: mem[d.Used:], Indirect: indirect, EventIdx: true})
		if err != nil {
			t.Fatal(err)
		}
		var c Chain
		for range 16 {
			ok, err := q.Pop(&c)
			if err != nil || !ok {
				return
			}
			for _, s := range append(c.Readable, c.Writable...) {
				_ = s[len(s)-1] // within memory
			}
			q.Push(c.Head, uint32(c.WriteLen))
			q.Flush()
			q.ArmNotify()
		}
	})
}
