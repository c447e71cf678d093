package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Protocol version. A peer whose major differs is refused with a
// *VersionError; minors only add optional things. Major 2: Data frames of
// 128 KiB and a 1 MiB window (major 1 had 32 KiB frames within a 64 KiB
// frame limit and a 256 KiB window, which a major-1 peer would refuse).
// Minor 1 adds the SessionError frame (a 2.0 peer that receives one ends
// the session as it would anyway, only without the reason) and
// Launch.TraceID (flag LaunchTrace), sent only when tracing (lab trace); a 2.0 relay
// refuses such a Launch as malformed, a 2.1 relay takes 2.0 Launches as they are.
const (
	Major = 2
	Minor = 1
)

// Sizes and bounds. Anything larger than these is a protocol error, never an
// allocation.
const (
	HeaderSize = 5                       // u32 length + u8 type
	MaxPayload = 128 << 10               // largest payload of any frame
	MaxFrame   = HeaderSize + MaxPayload // largest frame on the wire
	// MaxData is the data bytes in one Data frame: a full frame is exactly
	// 128 KiB (the kernel moves aligned sizes fastest; large frames mean few
	// wake-ups per byte).
	MaxData = 128<<10 - HeaderSize - 1
	// InitialWindow is the credit each side starts with, per stream: the
	// receiver's ring, granted back every half.
	InitialWindow = 1 << 20

	MaxToken   = 1024 // bytes of Hello.Token
	MaxPath    = 4096 // bytes of a path (Launch.Path, Launch.Cwd)
	MaxFormat  = 32   // bytes of Launch.Format
	MaxArgs    = 4096 // entries in Launch.Argv
	MaxEnv     = 4096 // entries in Launch.Env
	MaxMessage = 4096 // bytes of LaunchResult.Message
)

// DefaultPort is the AF_VSOCK port the relay listens on by default.
const DefaultPort = 5555

// Type is the frame type byte.
type Type uint8

// Frame types. Control messages (Hello .. Exit) are delivered by
// Session.Recv; stream frames (Data .. CloseRead) are handled by the
// Session itself.
const (
	TypeHello        Type = 0x01
	TypeLaunch       Type = 0x02
	TypeLaunchResult Type = 0x03
	TypeResize       Type = 0x04
	TypeSignal       Type = 0x05
	TypeExit         Type = 0x06
	TypeError        Type = 0x07 // SessionError (2.1)

	TypeData      Type = 0x10
	TypeEOF       Type = 0x11
	TypeWindow    Type = 0x12
	TypeCloseRead Type = 0x13
)

var typeNames = map[Type]string{
	TypeHello: "hello", TypeLaunch: "launch", TypeLaunchResult: "launch-result",
	TypeResize: "resize", TypeSignal: "signal", TypeExit: "exit", TypeError: "error",
	TypeData: "data", TypeEOF: "eof", TypeWindow: "window", TypeCloseRead: "close-read",
}

// Known reports whether t is a frame type of this protocol.
func (t Type) Known() bool {
	_, ok := typeNames[t]
	return ok
}

func (t Type) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type-0x%02x", uint8(t))
}

// ErrFrameTooLarge is returned for a frame whose length exceeds MaxFrame.
var ErrFrameTooLarge = errors.New("wire: frame too large")

// AppendFrame appends one frame (header and payload) to dst.
func AppendFrame(dst []byte, t Type, payload []byte) ([]byte, error) {
	if len(payload) > MaxPayload {
		return dst, fmt.Errorf("%w: %v payload of %d bytes (limit %d)", ErrFrameTooLarge, t, len(payload), MaxPayload)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(1+len(payload)))
	dst = append(dst, byte(t))
	return append(dst, payload...), nil
}

// parseHeader checks a frame header and returns the type and payload size.
func parseHeader(h []byte) (Type, int, error) {
	n := binary.BigEndian.Uint32(h)
	if n == 0 {
		return 0, 0, errors.New("wire: empty frame")
	}
	if n-1 > MaxPayload {
		return 0, 0, fmt.Errorf("%w: %d bytes (limit %d); is the peer a lab relay?", ErrFrameTooLarge, n+4, MaxFrame)
	}
	return Type(h[4]), int(n - 1), nil
}

// ReadFrame reads one frame from r into buf, which must hold at least
// MaxPayload bytes, and returns its type and payload (a slice of buf).
// A clean end of input before a header gives io.EOF; a frame cut short
// gives io.ErrUnexpectedEOF.
func ReadFrame(r io.Reader, buf []byte) (Type, []byte, error) {
	if len(buf) < MaxPayload {
		return 0, nil, errors.New("wire: ReadFrame buffer smaller than MaxPayload")
	}
	var h [HeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	t, n, err := parseHeader(h[:])
	if err != nil {
		return 0, nil, err
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return t, buf[:n], nil
}

// WriteMessage writes m as one frame.
func WriteMessage(w io.Writer, m Message) error {
	b, err := AppendMessage(nil, m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// ReadMessage reads one frame and decodes it as a control message. Stream
// frames are an error here: use a Session for them.
func ReadMessage(r io.Reader, buf []byte) (Message, error) {
	t, p, err := ReadFrame(r, buf)
	if err != nil {
		return nil, err
	}
	return Unmarshal(t, p)
}
