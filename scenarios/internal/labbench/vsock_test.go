package main

import (
	"io"
	"testing"
)

// sizeReader serves total bytes and records the size of every Read call's buffer.
type sizeReader struct {
	total int
	sizes []int
}

func (r *sizeReader) Read(p []byte) (int, error) {
	r.sizes = append(r.sizes, len(p))
	if r.total == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.total)
	r.total -= n
	return n, nil
}

// The raw vsock figure must not be bounded by the probe's read size: every read gets the
// whole buffer (io.Copy to io.Discard would read in 8 KiB).
func TestReadAllReadsWholeBuffer(t *testing.T) {
	r := &sizeReader{total: 1 << 20}
	buf := make([]byte, 256<<10)
	n, err := readAll(r, buf)
	if err != nil || n != 1<<20 {
		t.Fatalf("readAll = %d, %v; want %d, nil", n, err, 1<<20)
	}
	for i, s := range r.sizes {
		if s != len(buf) {
			t.Fatalf("read %d asked for %d bytes, want %d", i, s, len(buf))
		}
	}
}
