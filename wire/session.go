package wire

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Role says which end of a launch a Session is; it fixes the direction of
// each stream.
type Role uint8

const (
	RoleGuest Role = iota + 1 // sends Stdin; receives Stdout, Stderr
	RoleHost                  // receives Stdin; sends Stdout, Stderr
)

// StreamID names one of the three byte streams of a launch.
type StreamID uint8

const (
	Stdin  StreamID = 0
	Stdout StreamID = 1
	Stderr StreamID = 2

	numStreams = 3
)

func (id StreamID) String() string {
	switch id {
	case Stdin:
		return "stdin"
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	}
	return fmt.Sprintf("stream-%d", uint8(id))
}

// Errors of the stream layer.
var (
	// ErrStreamClosed: the peer called CloseRead on this stream (for
	// stdout: the guest's reader went away, as in `prog | head -1`). A
	// relay treats it like EPIPE.
	ErrStreamClosed = errors.New("wire: stream closed by the reader")
	// ErrWriteClosed: Write after CloseWrite.
	ErrWriteClosed = errors.New("wire: write after CloseWrite")
	// ErrReadClosed: Read after CloseRead.
	ErrReadClosed = errors.New("wire: read after CloseRead")
	// ErrSessionClosed: the session was closed locally.
	ErrSessionClosed = errors.New("wire: session closed")
	// ErrConnLost: the connection ended before the stream's EOF frame.
	ErrConnLost = errors.New("wire: connection ended before the end of the stream")
)

// ProtocolError is a frame the peer should never have sent. The session
// ends with it, after telling the peer (a SessionError frame).
type ProtocolError struct {
	Msg string
	Err error // the decoder's error, if that is what found it
}

func (e *ProtocolError) Error() string { return "wire: protocol error: " + e.Msg }
func (e *ProtocolError) Unwrap() error { return e.Err }

// asProtocolError makes a decoder's error (which says "wire: ...") a
// *ProtocolError, so that it is printed with one prefix.
func asProtocolError(err error) error {
	return &ProtocolError{Msg: strings.TrimPrefix(err.Error(), "wire: "), Err: err}
}

func protoErr(format string, args ...any) error {
	return &ProtocolError{Msg: fmt.Sprintf(format, args...)}
}

// maxQueued bounds control messages received but not yet taken by Recv.
const maxQueued = 1024

// Session multiplexes one launch over one connection: control messages
// (Send, Recv) and the three streams, each with its own credit window.
// A goroutine reads frames from the connection for the session's
// lifetime; it never blocks on the application, so a stream nobody reads
// never stalls the others.
type Session struct {
	conn Conn
	role Role

	// The frame reader's buffer (read loop only): headers, control frames
	// and the first bytes of Data payloads; the rest of a payload is read
	// from the connection straight into its stream's ring.
	rbuf       []byte
	rpos, rend int

	wmu  sync.Mutex // one frame at a time on conn
	wbuf []byte     // control frames; under wmu
	werr error      // first write error; under wmu

	cmu   sync.Mutex
	cq    []Message
	cwake chan struct{}

	done      chan struct{}
	err       error // why the read loop ended; valid once done is closed
	closeOnce sync.Once
	closed    chan struct{}

	readers [numStreams]*Reader
	writers [numStreams]*Writer
}

// Conn is what a Session runs over: a net.Conn without its addresses, which the session
// never uses. The guest's interpreter passes its own socket type (lab/guest.Conn) so that
// it does not link package net, whose init costs every launch page faults in a TCG guest.
type Conn interface {
	io.ReadWriteCloser
	SetDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
}

// NewSession starts a session over c for the given role. The session owns
// c from now on: Close closes it.
func NewSession(c Conn, role Role) *Session {
	s := &Session{
		conn:   c,
		role:   role,
		rbuf:   make([]byte, readChunk),
		cwake:  make(chan struct{}, 1),
		done:   make(chan struct{}),
		closed: make(chan struct{}),
	}
	for id := StreamID(0); id < numStreams; id++ {
		if (id == Stdin) == (role == RoleHost) {
			r := &Reader{s: s, id: id}
			r.cond.L = &r.mu
			s.readers[id] = r
		} else {
			w := &Writer{s: s, id: id, credit: InitialWindow}
			w.cond.L = &w.mu
			s.writers[id] = w
		}
	}
	go s.readLoop()
	return s
}

// Role returns the role the session was created with.
func (s *Session) Role() Role { return s.role }

// Conn returns the underlying connection.
func (s *Session) Conn() Conn { return s.conn }

// SetDeadline sets the connection's read and write deadline (use it to
// bound the handshake; a zero time clears it). A deadline that fires ends
// the session.
func (s *Session) SetDeadline(t time.Time) error { return s.conn.SetDeadline(t) }

// Reader returns the receiving end of stream id. It panics when this
// role sends on id (Stdin on the guest, Stdout or Stderr on the host).
func (s *Session) Reader(id StreamID) *Reader {
	if id >= numStreams || s.readers[id] == nil {
		panic(fmt.Sprintf("wire: %v is not readable by this role", id))
	}
	return s.readers[id]
}

// Writer returns the sending end of stream id. It panics when this role
// receives on id.
func (s *Session) Writer(id StreamID) *Writer {
	if id >= numStreams || s.writers[id] == nil {
		panic(fmt.Sprintf("wire: %v is not writable by this role", id))
	}
	return s.writers[id]
}

// Send writes control messages, all in one write.
func (s *Session) Send(msgs ...Message) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	b := s.wbuf[:0]
	for _, m := range msgs {
		var err error
		if b, err = AppendMessage(b, m); err != nil {
			return err
		}
	}
	s.wbuf = b
	return s.writeLocked(b)
}

// writeFrame writes one complete frame.
func (s *Session) writeFrame(b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.writeLocked(b)
}

func (s *Session) writeLocked(b []byte) error {
	if s.werr != nil {
		return s.werr
	}
	if _, err := s.conn.Write(b); err != nil {
		select {
		case <-s.closed:
			err = ErrSessionClosed
		default:
			err = fmt.Errorf("wire: write: %w", err)
		}
		s.werr = err
		return err
	}
	return nil
}

func (s *Session) sendStreamFrame(t Type, id StreamID, n uint32) error {
	var b [HeaderSize + 5]byte
	size := HeaderSize + 1
	if t == TypeWindow {
		binary.BigEndian.PutUint32(b[HeaderSize+1:], n)
		size += 4
	}
	putLen(b[:], size-HeaderSize)
	b[4] = byte(t)
	b[5] = byte(id)
	return s.writeFrame(b[:size])
}

// Recv returns the next control message. When the connection has ended
// and every queued message was taken, it returns io.EOF for a clean end
// by the peer or the error that ended the session.
func (s *Session) Recv(ctx context.Context) (Message, error) {
	for {
		s.cmu.Lock()
		if len(s.cq) > 0 {
			m := s.cq[0]
			s.cq[0] = nil
			s.cq = s.cq[1:]
			s.cmu.Unlock()
			return m, nil
		}
		s.cmu.Unlock()
		select {
		case <-s.cwake:
		case <-s.done:
			s.cmu.Lock()
			n := len(s.cq)
			s.cmu.Unlock()
			if n == 0 {
				return nil, s.err
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Done is closed when the session has ended (connection closed, failed or
// a protocol error).
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is why the session ended: io.EOF when the peer closed the
// connection, ErrSessionClosed after Close, a *ProtocolError, or a
// transport error. Nil while it runs.
func (s *Session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Close closes the connection; pending and later calls fail.
func (s *Session) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		err = s.conn.Close()
	})
	<-s.done
	return err
}

func (s *Session) readLoop() {
	err := s.readFrames()
	select {
	case <-s.closed:
		err = ErrSessionClosed
	default:
		var pe *ProtocolError
		var peer *PeerError
		switch {
		case err == io.EOF:
		case errors.As(err, &pe), errors.Is(err, ErrFrameTooLarge):
			s.sendError(err)
		case errors.As(err, &peer):
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			err = fmt.Errorf("wire: connection ended in the middle of a frame: %w", io.ErrUnexpectedEOF)
		default:
			err = fmt.Errorf("wire: read: %w", err) // the transport's own error
		}
	}
	s.err = err
	close(s.done)
	if err != io.EOF {
		s.closeOnce.Do(func() {
			close(s.closed)
			s.conn.Close()
		})
	}
	for _, r := range s.readers {
		if r != nil {
			r.mu.Lock()
			r.cond.Broadcast()
			r.mu.Unlock()
		}
	}
	for _, w := range s.writers {
		if w != nil {
			w.mu.Lock()
			w.cond.Broadcast()
			w.mu.Unlock()
		}
	}
}

// sendError tells the peer why the session ends (best effort: the
// connection closes right after). A writer blocked on a peer that does
// not read gives way within a second; after a failed write a frame may
// have been cut, so nothing more is sent. Nothing is written after it.
func (s *Session) sendError(err error) {
	msg := strings.TrimPrefix(err.Error(), "wire: ")
	if len(msg) > MaxMessage {
		msg = msg[:MaxMessage]
	}
	b, aerr := AppendMessage(nil, &SessionError{Message: msg})
	if aerr != nil {
		return
	}
	s.conn.SetWriteDeadline(time.Now().Add(time.Second))
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.werr == nil {
		s.conn.Write(b)
		s.werr = err
	}
}

// readChunk is how much the frame reader asks the connection for when it
// needs a header: enough for a burst of small frames in one read, little
// enough that most of a large Data payload is read straight into its ring
// (one copy less than reading everything through a buffer).
const readChunk = 4 << 10

// fill makes at least need bytes (at most MaxFrame) available in
// rbuf[rpos:rend].
func (s *Session) fill(need int) error {
	if s.rend-s.rpos >= need {
		return nil
	}
	if s.rpos > 0 {
		s.rend = copy(s.rbuf, s.rbuf[s.rpos:s.rend])
		s.rpos = 0
	}
	if need > len(s.rbuf) {
		// A large control frame (a Launch with a big argv): grow once.
		b := make([]byte, MaxFrame)
		copy(b, s.rbuf[:s.rend])
		s.rbuf = b
	}
	limit := min(max(need, readChunk), len(s.rbuf))
	for s.rend < need {
		n, err := s.conn.Read(s.rbuf[s.rend:limit])
		s.rend += n
		if err != nil {
			if s.rend >= need {
				return nil // the error comes again with the next read
			}
			return err
		}
	}
	return nil
}

// readFull fills p from the buffered bytes, then straight from the
// connection.
func (s *Session) readFull(p []byte) error {
	n := copy(p, s.rbuf[s.rpos:s.rend])
	s.rpos += n
	if n == len(p) {
		return nil
	}
	_, err := io.ReadFull(s.conn, p[n:])
	return err
}

func (s *Session) readFrames() error {
	for {
		if err := s.fill(HeaderSize); err != nil {
			if err == io.EOF && s.rend > s.rpos {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		t, n, err := parseHeader(s.rbuf[s.rpos:s.rend])
		if err != nil {
			if errors.Is(err, ErrFrameTooLarge) {
				return err
			}
			return asProtocolError(err)
		}
		s.rpos += HeaderSize
		if t == TypeData && n > 1 {
			if err := s.fill(1); err != nil {
				return unexpectedEOF(err)
			}
			id := s.rbuf[s.rpos]
			s.rpos++
			if err := s.readData(id, n-1); err != nil {
				return unexpectedEOF(err)
			}
			continue
		}
		if err := s.fill(n); err != nil {
			return unexpectedEOF(err)
		}
		if err := s.handle(t, s.rbuf[s.rpos:s.rpos+n]); err != nil {
			return err
		}
		s.rpos += n
	}
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readData reads the n payload bytes of a Data frame on stream id into the
// stream's ring, outside the ring's lock: the peer's credit guarantees that
// the bytes land in free space, which the application does not touch.
func (s *Session) readData(id uint8, n int) error {
	if StreamID(id) >= numStreams {
		return protoErr("%v frame for unknown stream %d", TypeData, id)
	}
	r := s.readers[id]
	if r == nil {
		return protoErr("%v frame for %v, which this side sends", TypeData, StreamID(id))
	}
	seg1, seg2, err := r.reserve(n)
	if err != nil {
		return err
	}
	if seg1 == nil {
		// The application closed the stream: drop the bytes.
		for n > 0 {
			k := min(n, s.rend-s.rpos)
			if k == 0 {
				s.rpos, s.rend = 0, 0
				m, err := s.conn.Read(s.rbuf[:min(n, len(s.rbuf))])
				if m == 0 && err != nil {
					return err
				}
				k = m
				s.rend = m
			}
			s.rpos += k
			n -= k
		}
		return nil
	}
	if err := s.readFull(seg1); err != nil {
		return err
	}
	if err := s.readFull(seg2); err != nil {
		return err
	}
	r.commit(n)
	return nil
}

// controlFrom lists the control messages each role may receive.
func (s *Session) acceptsControl(t Type) bool {
	switch t {
	case TypeHello, TypeError:
		return true
	case TypeLaunch, TypeResize, TypeSignal:
		return s.role == RoleHost
	case TypeLaunchResult, TypeExit:
		return s.role == RoleGuest
	}
	return false
}

func (s *Session) handle(t Type, p []byte) error {
	switch t {
	case TypeData, TypeEOF, TypeWindow, TypeCloseRead:
		if len(p) < 1 {
			return protoErr("%v frame without a stream id", t)
		}
		id := StreamID(p[0])
		if id >= numStreams {
			return protoErr("%v frame for unknown stream %d", t, p[0])
		}
		switch t {
		case TypeData, TypeEOF:
			r := s.readers[id]
			if r == nil {
				return protoErr("%v frame for %v, which this side sends", t, id)
			}
			if t == TypeEOF {
				if len(p) != 1 {
					return protoErr("eof frame of %d bytes", len(p)+HeaderSize)
				}
				return r.gotEOF()
			}
			return r.gotData(p[1:])
		default:
			w := s.writers[id]
			if w == nil {
				return protoErr("%v frame for %v, which this side receives", t, id)
			}
			if t == TypeCloseRead {
				if len(p) != 1 {
					return protoErr("close-read frame of %d bytes", len(p)+HeaderSize)
				}
				w.gotCloseRead()
				return nil
			}
			if len(p) != 5 {
				return protoErr("window frame of %d bytes", len(p)+HeaderSize)
			}
			return w.gotWindow(binary.BigEndian.Uint32(p[1:]))
		}
	}
	if !s.acceptsControl(t) {
		return protoErr("unexpected %v message", t)
	}
	m, err := Unmarshal(t, p)
	if err != nil {
		return asProtocolError(err)
	}
	if e, ok := m.(*SessionError); ok {
		return &PeerError{Message: e.Message}
	}
	s.cmu.Lock()
	if _, ok := m.(*Resize); ok {
		// Only the latest size matters: a burst of resizes (a window being
		// dragged) coalesces into one instead of filling the queue.
		for i, q := range s.cq {
			if _, ok := q.(*Resize); ok {
				s.cq = append(s.cq[:i], s.cq[i+1:]...)
				break
			}
		}
	}
	if len(s.cq) >= maxQueued {
		s.cmu.Unlock()
		return protoErr("more than %d control messages queued", maxQueued)
	}
	s.cq = append(s.cq, m)
	s.cmu.Unlock()
	select {
	case s.cwake <- struct{}{}:
	default:
	}
	return nil
}

// Reader is the receiving end of a stream: an io.Reader with WriteTo, and
// CloseRead to tell the sender to stop. Use it from one goroutine at a time.
type Reader struct {
	s  *Session
	id StreamID

	mu      sync.Mutex
	cond    sync.Cond
	ring    []byte // InitialWindow bytes, allocated with the first data
	r, w    uint64 // bytes consumed, bytes received
	unacked int    // consumed but not yet granted back
	eof     bool
	closed  bool
}

var (
	_ io.Reader   = (*Reader)(nil)
	_ io.WriterTo = (*Reader)(nil)
)

// ID returns the stream this Reader receives.
func (r *Reader) ID() StreamID { return r.id }

// reserve checks a Data frame of n bytes against the stream's state and
// window and returns where in the ring its bytes go (seg2 is the part that
// wraps around), or nil segments when the stream is closed for reading and
// the bytes are to be dropped. commit makes them readable.
func (r *Reader) reserve(n int) (seg1, seg2 []byte, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.eof {
		return nil, nil, protoErr("data on %v after its eof", r.id)
	}
	if r.closed {
		return nil, nil, nil // the sender has not seen our close-read yet
	}
	if n > MaxData {
		return nil, nil, protoErr("data frame of %d bytes on %v (limit %d)", n, r.id, MaxData)
	}
	granted := r.r - uint64(r.unacked)
	if r.w+uint64(n) > granted+InitialWindow {
		return nil, nil, protoErr("peer overran the %v window", r.id)
	}
	if n == 0 {
		return nil, nil, nil
	}
	if r.ring == nil {
		r.ring = make([]byte, InitialWindow)
	}
	off := int(r.w % InitialWindow)
	end := min(off+n, InitialWindow)
	return r.ring[off:end], r.ring[:n-(end-off)], nil
}

func (r *Reader) commit(n int) {
	r.mu.Lock()
	r.w += uint64(n)
	if r.closed {
		r.r = r.w // closed while the bytes arrived: drop them
	}
	r.cond.Broadcast()
	r.mu.Unlock()
}

func (r *Reader) gotData(p []byte) error {
	if len(p) == 0 {
		_, _, err := r.reserve(0)
		return err
	}
	seg1, seg2, err := r.reserve(len(p))
	if err != nil || seg1 == nil {
		return err
	}
	n := copy(seg1, p)
	copy(seg2, p[n:])
	r.commit(len(p))
	return nil
}

func (r *Reader) gotEOF() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.eof {
		return protoErr("second eof on %v", r.id)
	}
	r.eof = true
	r.cond.Broadcast()
	return nil
}

// wait blocks until there is data, EOF, a local close or a session end;
// it returns with r.mu held and the error to return if there is no data.
func (r *Reader) wait() error {
	for r.w == r.r && !r.eof && !r.closed {
		if isDone(r.s.done) {
			return r.sessionErr()
		}
		r.cond.Wait()
	}
	if r.closed {
		return ErrReadClosed
	}
	if r.w == r.r {
		return io.EOF
	}
	return nil
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (r *Reader) sessionErr() error {
	err := r.s.err
	if err == io.EOF {
		return fmt.Errorf("wire: %v: %w", r.id, ErrConnLost)
	}
	return err
}

// consumed records n bytes taken and returns a credit to grant, if due.
func (r *Reader) consumed(n int) uint32 {
	r.r += uint64(n)
	r.unacked += n
	if r.unacked >= InitialWindow/2 && !r.eof {
		g := r.unacked
		r.unacked = 0
		return uint32(g)
	}
	return 0
}

func (r *Reader) grant(g uint32) {
	if g > 0 {
		// An error here means the session is ending; the next
		// Read reports it.
		_ = r.s.sendStreamFrame(TypeWindow, r.id, g)
	}
}

// Read reads buffered stream data; io.EOF after the peer's EOF frame.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.mu.Lock()
	if err := r.wait(); err != nil {
		r.mu.Unlock()
		return 0, err
	}
	avail := int(r.w - r.r)
	off := int(r.r % InitialWindow)
	n := copy(p[:min(len(p), avail)], r.ring[off:])
	if n < len(p) && n < avail {
		n += copy(p[n:min(len(p), avail)], r.ring)
	}
	g := r.consumed(n)
	r.mu.Unlock()
	r.grant(g)
	return n, nil
}

// WriteTo writes the stream to w until EOF, straight from the receive
// buffer. It returns nil at EOF.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		r.mu.Lock()
		if err := r.wait(); err != nil {
			r.mu.Unlock()
			if err == io.EOF {
				err = nil
			}
			return total, err
		}
		off := int(r.r % InitialWindow)
		end := min(off+int(r.w-r.r), InitialWindow)
		// The read loop only writes outside [r, w), so this slice is
		// stable without the lock.
		seg := r.ring[off:end]
		r.mu.Unlock()
		n, err := w.Write(seg)
		r.mu.Lock()
		g := uint32(0)
		if !r.closed {
			g = r.consumed(n)
		}
		r.mu.Unlock()
		r.grant(g)
		total += int64(n)
		if err != nil {
			return total, err
		}
		if n < len(seg) {
			return total, io.ErrShortWrite
		}
	}
}

// CloseRead discards buffered and future data and tells the sender to
// stop (its writes fail with ErrStreamClosed). Idempotent.
func (r *Reader) CloseRead() error {
	r.mu.Lock()
	if r.closed || r.eof {
		r.closed = true
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.r = r.w
	r.cond.Broadcast()
	r.mu.Unlock()
	return r.s.sendStreamFrame(TypeCloseRead, r.id, 0)
}

// Writer is the sending end of a stream: an io.Writer with ReadFrom, and
// CloseWrite to send EOF. Writes block while the peer's window is full.
type Writer struct {
	s  *Session
	id StreamID

	mu         sync.Mutex // guards the fields below
	cond       sync.Cond
	credit     int64
	peerClosed bool
	closed     bool

	wlock sync.Mutex // one Write, ReadFrom or CloseWrite at a time
	frame []byte     // HeaderSize+1+MaxData, allocated with the first write
}

var (
	_ io.WriteCloser = (*Writer)(nil)
	_ io.ReaderFrom  = (*Writer)(nil)
)

// ID returns the stream this Writer sends.
func (w *Writer) ID() StreamID { return w.id }

const maxCredit = 1 << 31

func (w *Writer) gotWindow(n uint32) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n == 0 {
		return protoErr("zero window update on %v", w.id)
	}
	w.credit += int64(n)
	if w.credit > maxCredit {
		return protoErr("window of %v grew past %d bytes", w.id, int64(maxCredit))
	}
	w.cond.Broadcast()
	return nil
}

func (w *Writer) gotCloseRead() {
	w.mu.Lock()
	w.peerClosed = true
	w.cond.Broadcast()
	w.mu.Unlock()
}

// acquire waits for credit and takes up to max bytes of it.
func (w *Writer) acquire(max int) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		switch {
		case w.closed:
			return 0, ErrWriteClosed
		case w.peerClosed:
			return 0, fmt.Errorf("wire: %v: %w", w.id, ErrStreamClosed)
		}
		if isDone(w.s.done) {
			err := w.s.err
			if err == io.EOF {
				err = fmt.Errorf("wire: %v: %w", w.id, ErrConnLost)
			}
			return 0, err
		}
		if w.credit > 0 {
			n := int(min(int64(max), w.credit))
			w.credit -= int64(n)
			return n, nil
		}
		w.cond.Wait()
	}
}

func (w *Writer) release(n int) {
	if n > 0 {
		w.mu.Lock()
		w.credit += int64(n)
		w.mu.Unlock()
	}
}

// framePool holds Data frame buffers: a relay serves many short sessions,
// each of which would otherwise allocate (and the GC clear) a full frame
// per output stream.
var framePool = sync.Pool{New: func() any { b := make([]byte, HeaderSize+1+MaxData); return &b }}

func (w *Writer) buf() []byte {
	if w.frame == nil {
		w.frame = *framePool.Get().(*[]byte)
		w.frame[4] = byte(TypeData)
		w.frame[5] = byte(w.id)
	}
	return w.frame
}

func (w *Writer) send(n int) error {
	putLen(w.frame, n+1)
	return w.s.writeFrame(w.frame[:HeaderSize+1+n])
}

// Write sends p as Data frames of at most MaxData bytes.
func (w *Writer) Write(p []byte) (int, error) {
	w.wlock.Lock()
	defer w.wlock.Unlock()
	total := 0
	for len(p) > 0 {
		n, err := w.acquire(min(len(p), MaxData))
		if err != nil {
			return total, err
		}
		copy(w.buf()[HeaderSize+1:], p[:n])
		if err := w.send(n); err != nil {
			return total, err
		}
		p = p[n:]
		total += n
	}
	return total, nil
}

// ReadFrom sends everything src yields until io.EOF, reading straight into
// the frame buffer (no copy). It does not send EOF: call CloseWrite.
func (w *Writer) ReadFrom(src io.Reader) (int64, error) {
	w.wlock.Lock()
	defer w.wlock.Unlock()
	var total int64
	for {
		n, err := w.acquire(MaxData)
		if err != nil {
			return total, err
		}
		m, rerr := src.Read(w.buf()[HeaderSize+1 : HeaderSize+1+n])
		w.release(n - m)
		if m > 0 {
			if err := w.send(m); err != nil {
				return total, err
			}
			total += int64(m)
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// CloseWrite sends the EOF frame: the peer's Reader returns io.EOF after
// the data sent before. Idempotent.
func (w *Writer) CloseWrite() error {
	w.wlock.Lock()
	defer w.wlock.Unlock()
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.cond.Broadcast()
	w.mu.Unlock()
	if w.frame != nil {
		// Nothing writes after CloseWrite (wlock is held; later writes
		// fail before they touch the buffer): give it back.
		f := w.frame
		w.frame = nil
		framePool.Put(&f)
	}
	return w.s.sendStreamFrame(TypeEOF, w.id, 0)
}

// Close is CloseWrite.
func (w *Writer) Close() error { return w.CloseWrite() }
