package wire

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Message is a control message: Hello, Launch, LaunchResult, Resize, Signal
// or Exit (always as pointers).
type Message interface {
	Type() Type
	// MarshalBinary returns the payload (no frame header).
	MarshalBinary() ([]byte, error)
	// UnmarshalBinary decodes a payload; it never panics and never keeps
	// a reference to p.
	UnmarshalBinary(p []byte) error
	appendPayload(e *encoder)
}

var (
	_ Message = (*Hello)(nil)
	_ Message = (*Launch)(nil)
	_ Message = (*LaunchResult)(nil)
	_ Message = (*Resize)(nil)
	_ Message = (*Signal)(nil)
	_ Message = (*Exit)(nil)
	_ Message = (*SessionError)(nil)
)

// AppendMessage appends m as one frame to dst.
func AppendMessage(dst []byte, m Message) ([]byte, error) {
	start := len(dst)
	e := encoder{b: append(dst, 0, 0, 0, 0, byte(m.Type()))}
	m.appendPayload(&e)
	if e.err != nil {
		return dst, e.err
	}
	n := len(e.b) - start - HeaderSize
	if n > MaxPayload {
		return dst, fmt.Errorf("%w: %v message of %d bytes (limit %d)", ErrFrameTooLarge, m.Type(), n, MaxPayload)
	}
	putLen(e.b[start:], n)
	return e.b, nil
}

func putLen(b []byte, payload int) {
	n := uint32(payload + 1)
	b[0], b[1], b[2], b[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
}

func marshal(m Message) ([]byte, error) {
	e := encoder{}
	m.appendPayload(&e)
	if e.err != nil {
		return nil, e.err
	}
	if len(e.b) > MaxPayload {
		return nil, fmt.Errorf("%w: %v message of %d bytes (limit %d)", ErrFrameTooLarge, m.Type(), len(e.b), MaxPayload)
	}
	return e.b, nil
}

// Unmarshal decodes the payload of a control frame of type t.
func Unmarshal(t Type, p []byte) (Message, error) {
	var m Message
	switch t {
	case TypeHello:
		m = new(Hello)
	case TypeLaunch:
		m = new(Launch)
	case TypeLaunchResult:
		m = new(LaunchResult)
	case TypeResize:
		m = new(Resize)
	case TypeSignal:
		m = new(Signal)
	case TypeExit:
		m = new(Exit)
	case TypeError:
		m = new(SessionError)
	default:
		return nil, fmt.Errorf("wire: unknown control message %v", t)
	}
	if err := m.UnmarshalBinary(p); err != nil {
		return nil, err
	}
	return m, nil
}

// HelloMagic opens every Hello's payload so that a peer speaking something
// else is named as such instead of failing on a length.
const HelloMagic = "LABW"

var helloMagic = []byte(HelloMagic)

// Hello is the first frame each side sends. The guest's carries the token;
// the relay answers with its own Hello (empty token) before the
// LaunchResult. Magic, Major and Minor keep their place in every version.
type Hello struct {
	Major, Minor uint16
	Flags        uint32 // reserved, zero
	Token        []byte // guest to host: the per-VM token; at most MaxToken bytes
}

// NewHello returns a Hello for this version of the protocol.
func NewHello(token []byte) *Hello { return &Hello{Major: Major, Minor: Minor, Token: token} }

func (*Hello) Type() Type                       { return TypeHello }
func (m *Hello) MarshalBinary() ([]byte, error) { return marshal(m) }

func (m *Hello) appendPayload(e *encoder) {
	if len(m.Token) > MaxToken {
		e.check(fmt.Errorf("wire: token too long (%d bytes, limit %d)", len(m.Token), MaxToken))
	}
	e.b = append(e.b, helloMagic...)
	e.u16(m.Major)
	e.u16(m.Minor)
	e.u32(m.Flags)
	e.bytes(m.Token)
}

// ErrNotLab means the peer's first frame was not a lab Hello.
var ErrNotLab = errors.New("wire: peer does not speak the lab interop protocol")

func (m *Hello) UnmarshalBinary(p []byte) error {
	d := decoder{b: p}
	if magic := d.take(len(helloMagic)); magic == nil || !bytes.Equal(magic, helloMagic) {
		return ErrNotLab
	}
	*m = Hello{Major: d.u16(), Minor: d.u16()}
	if d.err == nil && m.Major != Major {
		// The rest of a foreign major's Hello is not ours to parse.
		return &VersionError{Local: Major, Remote: m.Major, RemoteMinor: m.Minor}
	}
	m.Flags = d.u32()
	m.Token = d.bytes(MaxToken, "token")
	return d.finish(TypeHello)
}

// VersionError reports a peer speaking another major version. Its message
// is meant to be printed as is, on both sides.
type VersionError struct {
	Local, Remote uint16
	RemoteMinor   uint16
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("wire: protocol version mismatch: peer speaks %d.%d, this side speaks %d.%d (reinstall the guest interpreter with `lab provision`)",
		e.Remote, e.RemoteMinor, e.Local, Minor)
}

// CheckVersion returns a *VersionError when h is from another major.
func CheckVersion(h *Hello) error {
	if h.Major != Major {
		return &VersionError{Local: Major, Remote: h.Major, RemoteMinor: h.Minor}
	}
	return nil
}

// Format names for Launch.Format.
const (
	FormatPE   = "pe"   // a Windows PE file (magic MZ), run by the relay's PE runner
	FormatHost = "host" // an exposed-host-command stub; Launch.Path is the command name
)

// EnvFlag are the LABENV flags of one variable (WSLENV's letters).
type EnvFlag uint8

const (
	EnvPath     EnvFlag = 1 << iota // /p: the value is a path; the host translates it
	EnvPathList                     // /l: the value is a colon-separated path list; the host translates each
	EnvToGuest                      // /u: only crosses host to guest (never in a Launch)
	EnvToHost                       // /w: only crosses guest to host
	EnvUnset                        // the variable is unset in the guest: the host removes it
)

// EnvVar is one environment entry selected by LABENV.
type EnvVar struct {
	Name  string // non-empty, no '=' and no NUL
	Value string // empty when Flags has EnvUnset
	Flags EnvFlag
}

// LaunchFlag are the flags of a Launch.
type LaunchFlag uint8

const (
	LaunchTTY   LaunchFlag = 1 << iota // the guest's stdio is one foreground terminal: run under a pty
	LaunchTrace                        // (2.1) a trace id follows cols: the relay records its steps under it (lab trace)
	// LaunchCwdWarning asks the relay to write its one-line warning on the program's stderr
	// when the guest cwd is not in a share (by default it only logs it: WSL writes nothing
	// of its own there). A relay that predates the flag ignores it (and always warns).
	LaunchCwdWarning
)

// Launch asks the relay to run a program. Sent by the guest right after its
// Hello (without waiting for the relay's).
type Launch struct {
	Format string     // FormatPE, FormatHost or a configured format name
	Path   string     // full guest path of the file (symlinks resolved in the guest); FormatHost: the command name
	Argv   []string   // argv[0] per binfmt P: the original argv0, or its basename when it equals the full path
	Cwd    string     // guest working directory; the host maps it through the shares
	Env    []EnvVar   // variables selected by LABENV, LABENV itself first
	Flags  LaunchFlag // LaunchTTY, LaunchCwdWarning
	Rows   uint16     // terminal size when LaunchTTY
	Cols   uint16
	// TraceID (protocol 2.1, optional) asks the relay to record this launch's steps under
	// the id (lab trace). On the wire it follows Cols only when Flags has LaunchTrace, which
	// the encoder sets when TraceID is not empty: a Launch without one is a 2.0 Launch.
	TraceID string
}

func (*Launch) Type() Type                       { return TypeLaunch }
func (m *Launch) MarshalBinary() ([]byte, error) { return marshal(m) }

func (m *Launch) appendPayload(e *encoder) {
	e.check(checkCString(m.Format, "format", MaxFormat))
	e.check(checkCString(m.Path, "path", MaxPath))
	e.check(checkCString(m.Cwd, "cwd", MaxPath))
	if m.Format == "" {
		e.check(errors.New("wire: launch without a format"))
	}
	if len(m.Argv) == 0 {
		e.check(errors.New("wire: launch without argv[0]"))
	}
	if len(m.Argv) > MaxArgs {
		e.check(fmt.Errorf("wire: too many arguments (%d, limit %d)", len(m.Argv), MaxArgs))
	}
	if len(m.Env) > MaxEnv {
		e.check(fmt.Errorf("wire: too many environment entries (%d, limit %d)", len(m.Env), MaxEnv))
	}
	e.str(m.Format)
	e.str(m.Path)
	e.u32(uint32(len(m.Argv)))
	for _, a := range m.Argv {
		e.check(checkCString(a, "argument", MaxPayload))
		e.str(a)
	}
	e.str(m.Cwd)
	e.u32(uint32(len(m.Env)))
	for _, v := range m.Env {
		e.check(checkEnvName(v.Name))
		e.check(checkCString(v.Value, "environment value", MaxPayload))
		e.str(v.Name)
		e.str(v.Value)
		e.u8(uint8(v.Flags))
	}
	flags := m.Flags
	if m.TraceID != "" {
		flags |= LaunchTrace
		e.check(CheckTraceID(m.TraceID))
	} else if flags&LaunchTrace != 0 {
		e.check(errors.New("wire: launch trace flag without a trace id"))
	}
	e.u8(uint8(flags))
	e.u16(m.Rows)
	e.u16(m.Cols)
	if flags&LaunchTrace != 0 {
		e.str(m.TraceID)
	}
}

// MaxTraceID bounds Launch.TraceID.
const MaxTraceID = 64

// CheckTraceID reports whether id is a valid trace id: 1 to MaxTraceID bytes of
// [A-Za-z0-9._-] (it lands in file names and log lines).
func CheckTraceID(id string) error {
	if id == "" || len(id) > MaxTraceID {
		return fmt.Errorf("wire: trace id of %d bytes (want 1 to %d)", len(id), MaxTraceID)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("wire: trace id %q: only letters, digits, '.', '_' and '-'", id)
		}
	}
	return nil
}

func checkEnvName(s string) error {
	if s == "" {
		return errors.New("wire: empty environment variable name")
	}
	if strings.IndexByte(s, '=') >= 0 {
		return fmt.Errorf("wire: environment variable name %q contains '='", s)
	}
	return checkCString(s, "environment variable name", MaxPayload)
}

func (m *Launch) UnmarshalBinary(p []byte) error {
	d := decoder{b: p}
	*m = Launch{}
	m.Format = d.cstr(MaxFormat, "format")
	m.Path = d.cstr(MaxPath, "path")
	if n := d.count(MaxArgs, 4, "arguments"); n > 0 {
		m.Argv = make([]string, n)
		for i := range m.Argv {
			m.Argv[i] = d.cstr(MaxPayload, "argument")
		}
	}
	m.Cwd = d.cstr(MaxPath, "cwd")
	if n := d.count(MaxEnv, 9, "environment entries"); n > 0 {
		m.Env = make([]EnvVar, n)
		for i := range m.Env {
			v := &m.Env[i]
			v.Name = d.cstr(MaxPayload, "environment variable name")
			v.Value = d.cstr(MaxPayload, "environment value")
			v.Flags = EnvFlag(d.u8())
			if d.err == nil {
				d.fail(checkEnvName(v.Name))
			}
		}
	}
	m.Flags = LaunchFlag(d.u8())
	m.Rows = d.u16()
	m.Cols = d.u16()
	if m.Flags&LaunchTrace != 0 {
		n := d.length(MaxTraceID, "trace id")
		m.TraceID = string(d.take(n))
		if d.err == nil {
			d.fail(CheckTraceID(m.TraceID))
		}
	}
	if d.err == nil && m.Format == "" {
		d.fail(errors.New("wire: launch without a format"))
	}
	if d.err == nil && len(m.Argv) == 0 {
		d.fail(errors.New("wire: launch without argv[0]"))
	}
	return d.finish(TypeLaunch)
}

// Errno is an error code in LaunchResult, with Linux numbering on every
// platform.
type Errno uint32

// The codes a relay uses. Anything else is printed with its number.
const (
	EPERM   Errno = 1  // refused by policy (not in a share, not exposed)
	ENOENT  Errno = 2  // no such file or command: the interpreter exits 127
	E2BIG   Errno = 7  // request too large
	ENOEXEC Errno = 8  // no runner for this format
	EAGAIN  Errno = 11 // too many sessions
	EACCES  Errno = 13 // bad token, or not executable
	EINVAL  Errno = 22 // malformed request
	EPROTO  Errno = 71 // protocol version mismatch
)

var errnoText = map[Errno]string{
	EPERM: "operation not permitted", ENOENT: "no such file or directory", E2BIG: "argument list too long",
	ENOEXEC: "exec format error", EAGAIN: "resource temporarily unavailable", EACCES: "permission denied",
	EINVAL: "invalid argument", EPROTO: "protocol error",
}

func (e Errno) Error() string {
	if s, ok := errnoText[e]; ok {
		return s
	}
	return fmt.Sprintf("errno %d", uint32(e))
}

// LaunchResult answers a Launch: Errno 0 means the program started.
type LaunchResult struct {
	Errno   Errno  // 0: started
	Flags   uint32 // reserved, zero
	Message string // on failure: one whole line naming the program; the interpreter prints it on one line after "lab-interop: " (at most MaxMessage bytes)
}

func (*LaunchResult) Type() Type                       { return TypeLaunchResult }
func (m *LaunchResult) MarshalBinary() ([]byte, error) { return marshal(m) }

func (m *LaunchResult) appendPayload(e *encoder) {
	if len(m.Message) > MaxMessage {
		e.check(fmt.Errorf("wire: launch result message too long (%d bytes, limit %d)", len(m.Message), MaxMessage))
	}
	e.u32(uint32(m.Errno))
	e.u32(m.Flags)
	e.str(m.Message)
}

func (m *LaunchResult) UnmarshalBinary(p []byte) error {
	d := decoder{b: p}
	*m = LaunchResult{Errno: Errno(d.u32()), Flags: d.u32()}
	n := d.length(MaxMessage, "launch result message")
	m.Message = string(d.take(n))
	return d.finish(TypeLaunchResult)
}

// Resize reports the guest terminal's new size (SIGWINCH).
type Resize struct {
	Rows, Cols     uint16
	XPixel, YPixel uint16
}

func (*Resize) Type() Type                       { return TypeResize }
func (m *Resize) MarshalBinary() ([]byte, error) { return marshal(m) }
func (m *Resize) appendPayload(e *encoder) {
	e.u16(m.Rows)
	e.u16(m.Cols)
	e.u16(m.XPixel)
	e.u16(m.YPixel)
}

func (m *Resize) UnmarshalBinary(p []byte) error {
	d := decoder{b: p}
	*m = Resize{Rows: d.u16(), Cols: d.u16(), XPixel: d.u16(), YPixel: d.u16()}
	return d.finish(TypeResize)
}

// MaxSignal is the largest signal number (Linux SIGRTMAX).
const MaxSignal = 64

// Signal asks the relay to deliver a signal (Linux numbering) to the
// program's process group.
type Signal struct {
	Signo uint8 // 1..MaxSignal
}

func (*Signal) Type() Type                       { return TypeSignal }
func (m *Signal) MarshalBinary() ([]byte, error) { return marshal(m) }
func (m *Signal) appendPayload(e *encoder) {
	if m.Signo == 0 || m.Signo > MaxSignal {
		e.check(fmt.Errorf("wire: signal %d out of range", m.Signo))
	}
	e.u8(m.Signo)
}

func (m *Signal) UnmarshalBinary(p []byte) error {
	d := decoder{b: p}
	m.Signo = d.u8()
	if d.err == nil && (m.Signo == 0 || m.Signo > MaxSignal) {
		d.fail(fmt.Errorf("wire: signal %d out of range", m.Signo))
	}
	return d.finish(TypeSignal)
}

// ExitFlag are the flags of an Exit.
type ExitFlag uint8

const (
	ExitCoreDumped ExitFlag = 1 << iota
)

// Exit is the program's end, sent by the relay after the EOF frames of
// stdout and stderr.
type Exit struct {
	Code   uint32 // full exit code (Windows codes use all 32 bits); 0 when Signal != 0
	Signal uint8  // killed by this signal (Linux numbering), 0 if it exited
	Flags  ExitFlag
}

func (*Exit) Type() Type                       { return TypeExit }
func (m *Exit) MarshalBinary() ([]byte, error) { return marshal(m) }
func (m *Exit) appendPayload(e *encoder) {
	if m.Signal > MaxSignal {
		e.check(fmt.Errorf("wire: signal %d out of range", m.Signal))
	}
	e.u32(m.Code)
	e.u8(m.Signal)
	e.u8(uint8(m.Flags))
}

func (m *Exit) UnmarshalBinary(p []byte) error {
	d := decoder{b: p}
	*m = Exit{Code: d.u32(), Signal: d.u8(), Flags: ExitFlag(d.u8())}
	if d.err == nil && m.Signal > MaxSignal {
		d.fail(fmt.Errorf("wire: signal %d out of range", m.Signal))
	}
	return d.finish(TypeExit)
}

// Status is the exit status the guest interpreter exits with: 128+N when
// killed by signal N, otherwise the low 8 bits of Code (all a Linux exit
// status can carry).
func (m *Exit) Status() int {
	if m.Signal != 0 {
		return 128 + int(m.Signal)
	}
	return int(m.Code & 0xff)
}

// SessionError is the last frame a side sends before it closes the
// connection because the peer broke the protocol (protocol 2.1): the peer
// can then say why its session ended. A Session sends it by itself and
// ends with a *PeerError when it receives one; it is never queued for Recv.
type SessionError struct {
	Message string // one line, at most MaxMessage bytes
}

func (*SessionError) Type() Type                       { return TypeError }
func (m *SessionError) MarshalBinary() ([]byte, error) { return marshal(m) }

func (m *SessionError) appendPayload(e *encoder) {
	if len(m.Message) > MaxMessage {
		e.check(fmt.Errorf("wire: error message too long (%d bytes, limit %d)", len(m.Message), MaxMessage))
	}
	e.str(m.Message)
}

func (m *SessionError) UnmarshalBinary(p []byte) error {
	d := decoder{b: p}
	n := d.length(MaxMessage, "error message")
	*m = SessionError{Message: string(d.take(n))}
	return d.finish(TypeError)
}

// PeerError is why a session ended when the peer said so with a
// SessionError frame.
type PeerError struct {
	Message string
}

func (e *PeerError) Error() string { return "wire: the peer ended the session: " + e.Message }
