// Package vhostuser is the wire layer of a vhost-user back-end: message framing over a Unix
// socket with file descriptors passed as SCM_RIGHTS, the request codes and payload layouts of
// QEMU's vhost-user specification, and the guest memory table built from SET_MEM_TABLE.
//
// It knows nothing about virtqueues or vsock; the device package drives it.
package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Request is a vhost-user front-end request code.
type Request uint32

// Front-end requests (vhost-user specification, "Front-end message types").
const (
	GetFeatures         Request = 1
	SetFeatures         Request = 2
	SetOwner            Request = 3
	ResetOwner          Request = 4
	SetMemTable         Request = 5
	SetLogBase          Request = 6
	SetLogFD            Request = 7
	SetVringNum         Request = 8
	SetVringAddr        Request = 9
	SetVringBase        Request = 10
	GetVringBase        Request = 11
	SetVringKick        Request = 12
	SetVringCall        Request = 13
	SetVringErr         Request = 14
	GetProtocolFeatures Request = 15
	SetProtocolFeatures Request = 16
	GetQueueNum         Request = 17
	SetVringEnable      Request = 18
	SendRARP            Request = 19
	NetSetMTU           Request = 20
	SetBackendReqFD     Request = 21
	IOTLBMsg            Request = 22
	SetVringEndian      Request = 23
	GetConfig           Request = 24
	SetConfig           Request = 25
	ResetDevice         Request = 34
	GetMaxMemSlots      Request = 36
)

var requestNames = map[Request]string{
	GetFeatures: "GET_FEATURES", SetFeatures: "SET_FEATURES", SetOwner: "SET_OWNER",
	ResetOwner: "RESET_OWNER", SetMemTable: "SET_MEM_TABLE", SetLogBase: "SET_LOG_BASE",
	SetLogFD: "SET_LOG_FD", SetVringNum: "SET_VRING_NUM", SetVringAddr: "SET_VRING_ADDR",
	SetVringBase: "SET_VRING_BASE", GetVringBase: "GET_VRING_BASE", SetVringKick: "SET_VRING_KICK",
	SetVringCall: "SET_VRING_CALL", SetVringErr: "SET_VRING_ERR",
	GetProtocolFeatures: "GET_PROTOCOL_FEATURES", SetProtocolFeatures: "SET_PROTOCOL_FEATURES",
	GetQueueNum: "GET_QUEUE_NUM", SetVringEnable: "SET_VRING_ENABLE", SendRARP: "SEND_RARP",
	NetSetMTU: "NET_SET_MTU", SetBackendReqFD: "SET_BACKEND_REQ_FD", IOTLBMsg: "IOTLB_MSG",
	SetVringEndian: "SET_VRING_ENDIAN", GetConfig: "GET_CONFIG", SetConfig: "SET_CONFIG",
	ResetDevice: "RESET_DEVICE", GetMaxMemSlots: "GET_MAX_MEM_SLOTS",
}

func (r Request) String() string {
	if s, ok := requestNames[r]; ok {
		return s
	}
	return fmt.Sprintf("REQUEST_%d", uint32(r))
}

// Header flags.
const (
	FlagVersion   = 0x1 // bits 0-1: protocol version 1
	FlagReply     = 0x4
	FlagNeedReply = 0x8
	versionMask   = 0x3
)

// Virtio and vhost-user feature bits used by the back-end.
const (
	FeatureProtocolFeatures = 1 << 30 // VHOST_USER_F_PROTOCOL_FEATURES
	FeatureVersion1         = 1 << 32 // VIRTIO_F_VERSION_1
	FeatureAccessPlatform   = 1 << 33 // VIRTIO_F_ACCESS_PLATFORM (never offered)
	FeatureRingPacked       = 1 << 34 // VIRTIO_F_RING_PACKED (never offered)
	FeatureIndirectDesc     = 1 << 28 // VIRTIO_RING_F_INDIRECT_DESC
	FeatureEventIdx         = 1 << 29 // VIRTIO_RING_F_EVENT_IDX
)

// Protocol feature bits.
const (
	ProtocolMQ       = 1 << 0
	ProtocolReplyAck = 1 << 3
	ProtocolConfig   = 1 << 9
)

// HeaderSize is the size of the fixed message header.
const HeaderSize = 12

// MaxPayload bounds a message body. The largest message we accept is SET_MEM_TABLE with
// MaxRegions regions (8 + 8*32 bytes) or GET_CONFIG with a 256-byte config space.
const MaxPayload = 4096

// MaxFDs bounds the descriptors accepted with one message (SET_MEM_TABLE: one per region).
const MaxFDs = 8

// MaxRegions is the maximum number of memory regions in SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS).
const MaxRegions = 8

// Header is the 12-byte message header.
type Header struct {
	Request Request
	Flags   uint32
	Size    uint32
}

// NeedReply reports whether the front-end asked for a REPLY_ACK.
func (h Header) NeedReply() bool { return h.Flags&FlagNeedReply != 0 }

// MarshalHeader appends h in wire order.
func (h Header) Marshal(b []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(h.Request))
	b = binary.LittleEndian.AppendUint32(b, h.Flags)
	return binary.LittleEndian.AppendUint32(b, h.Size)
}

// ParseHeader decodes and validates a header.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("vhostuser: short header (%d bytes)", len(b))
	}
	h := Header{
		Request: Request(binary.LittleEndian.Uint32(b[0:])),
		Flags:   binary.LittleEndian.Uint32(b[4:]),
		Size:    binary.LittleEndian.Uint32(b[8:]),
	}
	if h.Flags&versionMask != FlagVersion {
		return h, fmt.Errorf("vhostuser: %v: unsupported protocol version %d", h.Request, h.Flags&versionMask)
	}
	if h.Size > MaxPayload {
		return h, fmt.Errorf("vhostuser: %v: payload of %d bytes exceeds the limit of %d", h.Request, h.Size, MaxPayload)
	}
	return h, nil
}

// ErrShort is returned when a payload is too short for its request.
var ErrShort = errors.New("vhostuser: payload too short for request")

// VringState is struct vhost_vring_state: {index, num}.
type VringState struct {
	Index uint32
	Num   uint32
}

// ParseVringState decodes an 8-byte vring state.
func ParseVringState(p []byte) (VringState, error) {
	if len(p) < 8 {
		return VringState{}, ErrShort
	}
	return VringState{binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint32(p[4:])}, nil
}

// Marshal appends the vring state.
func (s VringState) Marshal(b []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, s.Index)
	return binary.LittleEndian.AppendUint32(b, s.Num)
}

// VringAddr is struct vhost_vring_addr. Addresses are front-end (QEMU) virtual addresses.
type VringAddr struct {
	Index uint32
	Flags uint32
	Desc  uint64
	Used  uint64
	Avail uint64
	Log   uint64
}

// ParseVringAddr decodes a 40-byte vring address message.
func ParseVringAddr(p []byte) (VringAddr, error) {
	if len(p) < 40 {
		return VringAddr{}, ErrShort
	}
	le := binary.LittleEndian
	return VringAddr{
		Index: le.Uint32(p), Flags: le.Uint32(p[4:]),
		Desc: le.Uint64(p[8:]), Used: le.Uint64(p[16:]), Avail: le.Uint64(p[24:]), Log: le.Uint64(p[32:]),
	}, nil
}

// Marshal appends the vring address payload.
func (a VringAddr) Marshal(b []byte) []byte {
	le := binary.LittleEndian
	b = le.AppendUint32(b, a.Index)
	b = le.AppendUint32(b, a.Flags)
	b = le.AppendUint64(b, a.Desc)
	b = le.AppendUint64(b, a.Used)
	b = le.AppendUint64(b, a.Avail)
	return le.AppendUint64(b, a.Log)
}

// VringFD is the u64 payload of SET_VRING_KICK/CALL/ERR: bits 0-7 the index, bit 8 "no fd".
type VringFD struct {
	Index uint32
	NoFD  bool
}

// ParseVringFD decodes the u64 payload.
func ParseVringFD(p []byte) (VringFD, error) {
	if len(p) < 8 {
		return VringFD{}, ErrShort
	}
	v := binary.LittleEndian.Uint64(p)
	return VringFD{Index: uint32(v & 0xff), NoFD: v&0x100 != 0}, nil
}

// Region is one entry of SET_MEM_TABLE.
type Region struct {
	GuestPhys  uint64
	Size       uint64
	UserAddr   uint64 // front-end virtual address
	MmapOffset uint64
}

// ParseMemTable decodes SET_MEM_TABLE's payload.
func ParseMemTable(p []byte) ([]Region, error) {
	if len(p) < 8 {
		return nil, ErrShort
	}
	le := binary.LittleEndian
	n := le.Uint32(p)
	if n == 0 || n > MaxRegions {
		return nil, fmt.Errorf("vhostuser: SET_MEM_TABLE with %d regions (1..%d allowed)", n, MaxRegions)
	}
	if uint64(len(p)) < 8+uint64(n)*32 {
		return nil, ErrShort
	}
	rs := make([]Region, n)
	for i := range rs {
		q := p[8+32*i:]
		rs[i] = Region{le.Uint64(q), le.Uint64(q[8:]), le.Uint64(q[16:]), le.Uint64(q[24:])}
	}
	return rs, nil
}

// MarshalMemTable encodes a SET_MEM_TABLE payload (for tests and fake front-ends).
func MarshalMemTable(b []byte, rs []Region) []byte {
	le := binary.LittleEndian
	b = le.AppendUint32(b, uint32(len(rs)))
	b = le.AppendUint32(b, 0)
	for _, r := range rs {
		b = le.AppendUint64(b, r.GuestPhys)
		b = le.AppendUint64(b, r.Size)
		b = le.AppendUint64(b, r.UserAddr)
		b = le.AppendUint64(b, r.MmapOffset)
	}
	return b
}

// ConfigHeaderSize is the size of {offset, size, flags} before the config bytes.
const ConfigHeaderSize = 12

// MaxConfigSize is VHOST_USER_MAX_CONFIG_SIZE.
const MaxConfigSize = 256

// ConfigReq is the GET_CONFIG/SET_CONFIG payload.
type ConfigReq struct {
	Offset, Size, Flags uint32
	Data                []byte
}

// ParseConfig decodes a config payload; Data aliases p.
func ParseConfig(p []byte) (ConfigReq, error) {
	if len(p) < ConfigHeaderSize {
		return ConfigReq{}, ErrShort
	}
	le := binary.LittleEndian
	c := ConfigReq{Offset: le.Uint32(p), Size: le.Uint32(p[4:]), Flags: le.Uint32(p[8:])}
	if c.Size > MaxConfigSize || uint64(len(p)-ConfigHeaderSize) < uint64(c.Size) {
		return c, fmt.Errorf("vhostuser: config request of %d bytes in a %d-byte payload", c.Size, len(p))
	}
	c.Data = p[ConfigHeaderSize : ConfigHeaderSize+int(c.Size)]
	return c, nil
}

// Marshal appends the config payload.
func (c ConfigReq) Marshal(b []byte) []byte {
	le := binary.LittleEndian
	b = le.AppendUint32(b, c.Offset)
	b = le.AppendUint32(b, c.Size)
	b = le.AppendUint32(b, c.Flags)
	return append(b, c.Data...)
}

// U64 decodes a u64 payload.
func U64(p []byte) (uint64, error) {
	if len(p) < 8 {
		return 0, ErrShort
	}
	return binary.LittleEndian.Uint64(p), nil
}
