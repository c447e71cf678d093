package vhostuser

import (
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// Msg is one decoded message. FDs are owned by the receiver: close the ones you do not keep.
type Msg struct {
	Header
	Payload []byte
	FDs     []int
}

// CloseFDs closes every fd in m and forgets them.
func (m *Msg) CloseFDs() {
	for _, fd := range m.FDs {
		unix.Close(fd)
	}
	m.FDs = nil
}

// Conn frames vhost-user messages over a Unix stream socket.
type Conn struct {
	c   *net.UnixConn
	hdr [HeaderSize]byte
	oob []byte
	buf []byte
}

// NewConn wraps c.
func NewConn(c *net.UnixConn) *Conn {
	return &Conn{c: c, oob: make([]byte, unix.CmsgSpace(MaxFDs*4)), buf: make([]byte, 0, 64)}
}

// Close closes the socket.
func (c *Conn) Close() error { return c.c.Close() }

// UnixConn returns the underlying socket.
func (c *Conn) UnixConn() *net.UnixConn { return c.c }

// readFull reads exactly len(p) bytes, collecting any fds passed along the way.
func (c *Conn) readFull(p []byte, fds []int) ([]int, error) {
	for off := 0; off < len(p); {
		n, oobn, flags, _, err := c.c.ReadMsgUnix(p[off:], c.oob)
		if oobn > 0 {
			got, perr := parseRights(c.oob[:oobn])
			fds = append(fds, got...)
			if perr != nil && err == nil {
				err = perr
			}
		}
		if flags&unix.MSG_CTRUNC != 0 && err == nil {
			err = errors.New("vhostuser: file descriptors truncated (too many sent)")
		}
		off += n
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.EOF
			}
			if err == io.EOF && off > 0 {
				err = io.ErrUnexpectedEOF
			}
			return fds, err
		}
		if n == 0 {
			return fds, io.ErrUnexpectedEOF
		}
	}
	return fds, nil
}

func parseRights(oob []byte) ([]int, error) {
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("vhostuser: bad control message: %w", err)
	}
	var fds []int
	for _, cm := range cmsgs {
		if cm.Header.Level != unix.SOL_SOCKET || cm.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&cm)
		if err != nil {
			return fds, fmt.Errorf("vhostuser: bad SCM_RIGHTS: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// Read reads one message. io.EOF means the front-end closed the connection cleanly between
// messages. The payload is valid until the next Read.
func (c *Conn) Read() (Msg, error) {
	var m Msg
	fds, err := c.readFull(c.hdr[:], nil)
	m.FDs = fds
	if err != nil {
		m.CloseFDs()
		return m, err
	}
	m.Header, err = ParseHeader(c.hdr[:])
	if err != nil {
		m.CloseFDs()
		return m, err
	}
	if cap(c.buf) < int(m.Size) {
		c.buf = make([]byte, m.Size)
	}
	m.Payload = c.buf[:m.Size]
	m.FDs, err = c.readFull(m.Payload, m.FDs)
	if err != nil {
		m.CloseFDs()
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return m, fmt.Errorf("vhostuser: reading %v payload: %w", m.Request, err)
	}
	if len(m.FDs) > MaxFDs {
		m.CloseFDs()
		return m, fmt.Errorf("vhostuser: %v carried more than %d fds", m.Request, MaxFDs)
	}
	return m, nil
}

// Write sends a message with optional fds.
func (c *Conn) Write(req Request, flags uint32, payload []byte, fds ...int) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("vhostuser: %v payload of %d bytes too large", req, len(payload))
	}
	b := make([]byte, 0, HeaderSize+len(payload))
	b = Header{Request: req, Flags: flags, Size: uint32(len(payload))}.Marshal(b)
	b = append(b, payload...)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, _, err := c.c.WriteMsgUnix(b, oob, nil)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("vhostuser: writing %v: %w", req, err)
	}
	return nil
}

// Reply sends a reply to req with the REPLY flag set.
func (c *Conn) Reply(req Request, payload []byte) error {
	return c.Write(req, FlagVersion|FlagReply, payload)
}
