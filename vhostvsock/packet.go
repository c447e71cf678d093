package vhostvsock

import (
	"encoding/binary"
	"fmt"
)

// virtio-vsock packet header (virtio 1.x §5.10.6), 44 bytes little endian.
const hdrSize = 44

// Packet types and operations.
const (
	typeStream = 1

	opRequest       = 1
	opResponse      = 2
	opRST           = 3
	opShutdown      = 4
	opRW            = 5
	opCreditUpdate  = 6
	opCreditRequest = 7

	shutdownRcv  = 1 // the sender will receive no more data
	shutdownSend = 2 // the sender will send no more data
)

// Well-known CIDs.
const (
	cidHost = 2
)

// maxPayload bounds one packet's payload (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE in Linux).
const maxPayload = 64 << 10

type header struct {
	SrcCID   uint64
	DstCID   uint64
	SrcPort  uint32
	DstPort  uint32
	Len      uint32
	Type     uint16
	Op       uint16
	Flags    uint32
	BufAlloc uint32
	FwdCnt   uint32
}

func (h *header) decode(b []byte) {
	_ = b[hdrSize-1]
	le := binary.LittleEndian
	h.SrcCID = le.Uint64(b[0:])
	h.DstCID = le.Uint64(b[8:])
	h.SrcPort = le.Uint32(b[16:])
	h.DstPort = le.Uint32(b[20:])
	h.Len = le.Uint32(b[24:])
	h.Type = le.Uint16(b[28:])
	h.Op = le.Uint16(b[30:])
	h.Flags = le.Uint32(b[32:])
	h.BufAlloc = le.Uint32(b[36:])
	h.FwdCnt = le.Uint32(b[40:])
}

func (h *header) encode(b []byte) {
	_ = b[hdrSize-1]
	le := binary.LittleEndian
	le.PutUint64(b[0:], h.SrcCID)
	le.PutUint64(b[8:], h.DstCID)
	le.PutUint32(b[16:], h.SrcPort)
	le.PutUint32(b[20:], h.DstPort)
	le.PutUint32(b[24:], h.Len)
	le.PutUint16(b[28:], h.Type)
	le.PutUint16(b[30:], h.Op)
	le.PutUint32(b[32:], h.Flags)
	le.PutUint32(b[36:], h.BufAlloc)
	le.PutUint32(b[40:], h.FwdCnt)
}

var opNames = [...]string{"INVALID", "REQUEST", "RESPONSE", "RST", "SHUTDOWN", "RW", "CREDIT_UPDATE", "CREDIT_REQUEST"}

func (h header) String() string {
	op := fmt.Sprintf("OP_%d", h.Op)
	if int(h.Op) < len(opNames) {
		op = opNames[h.Op]
	}
	return fmt.Sprintf("%s %d:%d->%d:%d type=%d len=%d flags=%d buf_alloc=%d fwd_cnt=%d",
		op, h.SrcCID, h.SrcPort, h.DstCID, h.DstPort, h.Type, h.Len, h.Flags, h.BufAlloc, h.FwdCnt)
}

// gather copies the first len(dst) bytes of segs into dst and returns how many it copied.
func gather(dst []byte, segs [][]byte) int {
	n := 0
	for _, s := range segs {
		if n == len(dst) {
			break
		}
		n += copy(dst[n:], s)
	}
	return n
}

// segReader reads sequentially across segments, skipping a prefix.
type segReader struct {
	segs [][]byte
	i    int
	off  int
}

func (r *segReader) reset(segs [][]byte, skip int) {
	r.segs, r.i, r.off = segs, 0, 0
	for skip > 0 && r.i < len(r.segs) {
		n := min(skip, len(r.segs[r.i]))
		skip -= n
		r.off = n
		if r.off == len(r.segs[r.i]) {
			r.i++
			r.off = 0
		}
	}
}

// next returns up to n contiguous bytes.
func (r *segReader) next(n int) []byte {
	for r.i < len(r.segs) && r.off == len(r.segs[r.i]) {
		r.i++
		r.off = 0
	}
	if r.i >= len(r.segs) || n == 0 {
		return nil
	}
	s := r.segs[r.i][r.off:]
	if len(s) > n {
		s = s[:n]
	}
	r.off += len(s)
	return s
}

// segWriter writes sequentially across segments.
type segWriter struct {
	segs [][]byte
	i    int
	off  int
	n    int
}

func (w *segWriter) reset(segs [][]byte) { w.segs, w.i, w.off, w.n = segs, 0, 0, 0 }

func (w *segWriter) write(p []byte) {
	for len(p) > 0 && w.i < len(w.segs) {
		c := copy(w.segs[w.i][w.off:], p)
		p = p[c:]
		w.off += c
		w.n += c
		if w.off == len(w.segs[w.i]) {
			w.i++
			w.off = 0
		}
	}
}
