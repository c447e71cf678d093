package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// encoder appends big-endian fields to a byte slice.
type encoder struct {
	b   []byte
	err error
}

func (e *encoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *encoder) u16(v uint16) { e.b = binary.BigEndian.AppendUint16(e.b, v) }
func (e *encoder) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }

func (e *encoder) bytes(p []byte) {
	e.u32(uint32(len(p)))
	e.b = append(e.b, p...)
}

func (e *encoder) str(s string) {
	e.u32(uint32(len(s)))
	e.b = append(e.b, s...)
}

// check records the first encode-side validation failure.
func (e *encoder) check(err error) {
	if e.err == nil && err != nil {
		e.err = err
	}
}

// decoder consumes big-endian fields with a sticky error: after the first
// failure every call returns a zero value, so a message decoder checks the
// error once at the end. Every length is bounded by what remains in the
// payload and by a per-field maximum, so no input can make it allocate more
// than the payload size.
type decoder struct {
	b   []byte
	err error
}

// errShort is what a truncated payload gives.
var errShort = errors.New("wire: message truncated")

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.fail(errShort)
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u8() uint8 {
	p := d.take(1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (d *decoder) u16() uint16 {
	p := d.take(2)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint16(p)
}

func (d *decoder) u32() uint32 {
	p := d.take(4)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

// length reads a u32 length and checks it against max and the bytes left.
func (d *decoder) length(max int, what string) int {
	n := d.u32()
	if d.err != nil {
		return 0
	}
	if uint64(n) > uint64(max) {
		d.fail(fmt.Errorf("wire: %s too long (%d bytes, limit %d)", what, n, max))
		return 0
	}
	if int(n) > len(d.b) {
		d.fail(errShort)
		return 0
	}
	return int(n)
}

func (d *decoder) bytes(max int, what string) []byte {
	n := d.length(max, what)
	p := d.take(n)
	if p == nil {
		return nil
	}
	return append([]byte(nil), p...)
}

// cstr reads a string that ends up in a C string on the other side (a path,
// an argument, an environment entry): it may not contain NUL.
func (d *decoder) cstr(max int, what string) string {
	n := d.length(max, what)
	p := d.take(n)
	if p == nil {
		return ""
	}
	s := string(p)
	if strings.IndexByte(s, 0) >= 0 {
		d.fail(fmt.Errorf("wire: %s contains a NUL byte", what))
		return ""
	}
	return s
}

// count reads a u32 element count; each element takes at least minEach
// bytes, so a count larger than the bytes left can only be a lie.
func (d *decoder) count(max, minEach int, what string) int {
	n := d.u32()
	if d.err != nil {
		return 0
	}
	if uint64(n) > uint64(max) {
		d.fail(fmt.Errorf("wire: too many %s (%d, limit %d)", what, n, max))
		return 0
	}
	if uint64(n)*uint64(minEach) > uint64(len(d.b)) {
		d.fail(errShort)
		return 0
	}
	return int(n)
}

// finish reports the sticky error or trailing garbage.
func (d *decoder) finish(t Type) error {
	if d.err != nil {
		if d.err == errShort {
			return fmt.Errorf("wire: %v message truncated", t)
		}
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("wire: %v message has %d trailing bytes", t, len(d.b))
	}
	return nil
}

func checkCString(s, what string, max int) error {
	if len(s) > max {
		return fmt.Errorf("wire: %s too long (%d bytes, limit %d)", what, len(s), max)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("wire: %s contains a NUL byte", what)
	}
	return nil
}
