// Package wire is the interop protocol between the guest interpreter
// (lab/guest) and the host relay (lab/host): one connection per launch
// carrying typed, length-prefixed, bounded frames; control messages and
// three byte streams multiplexed with a credit window per stream (as SSH
// channels do). It is written here rather than taken from a dependency
// because both ends must be tiny, allocation-free on the data path and
// fuzzed as one codec.
//
// # Frames
//
//	+----------------+--------+-------------------------+
//	| length u32 BE  | type u8| payload (length-1 bytes)|
//	+----------------+--------+-------------------------+
//
// length counts the type byte and the payload: 1 <= length <= 1+MaxPayload
// (128 KiB). A larger length is a protocol error before any allocation.
// Integers are big-endian; a string or byte field is a u32 length then the
// bytes; a list is a u32 count then the elements. Every length and count
// is bounded (MaxToken, MaxPath, MaxArgs, MaxEnv, MaxMessage, and the
// payload itself). Strings that become C strings (paths, argv, env) may
// not contain NUL.
//
// # Messages (payload layouts)
//
//	0x01 Hello         "LABW" major u16, minor u16, flags u32, token bytes
//	0x02 Launch        format str, path str, argv [str], cwd str,
//	                   env [name str, value str, flags u8], flags u8, rows u16, cols u16
//	                   [, trace id str: only when flags bit 1 (LaunchTrace) is set; 2.1]
//	0x03 LaunchResult  errno u32 (0 = started), flags u32, message str
//	0x04 Resize        rows u16, cols u16, xpixel u16, ypixel u16
//	0x05 Signal        signo u8 (Linux numbering, 1..64)
//	0x06 Exit          code u32, signal u8, flags u8 (bit0 core dumped)
//	0x07 SessionError  message str (2.1: why the sender closes; never queued)
//	0x10 Data          stream u8, bytes (at most MaxData: a full frame is 128 KiB)
//	0x11 EOF           stream u8                  (sender's half-close)
//	0x12 Window        stream u8, increment u32   (receiver grants credit)
//	0x13 CloseRead     stream u8                  (receiver stops reading)
//
// Streams: 0 stdin (guest to host), 1 stdout, 2 stderr (host to guest).
// A sender starts with InitialWindow (1 MiB) of credit per stream and
// may only send Data within its credit; the receiver returns credit with
// Window frames as the application consumes (every InitialWindow/2). A
// receiver never needs to buffer more than the window, so the frame
// reader never blocks on the application and no stream can stall another;
// it reads a Data payload from the connection straight into the stream's
// ring (credit guarantees the room), and a Writer reads its source straight
// into the frame it sends, so each byte is copied once per side.
//
// Version 2.0 differs from 1.0 only in these sizes (1.0: 64 KiB frame
// limit, 32 KiB Data frames, 256 KiB window); the two majors refuse each
// other with a *VersionError. Version 2.1 adds Launch.TraceID (lab trace),
// on the wire only when set: untraced 2.1 Launches are 2.0 Launches.
//
// # A launch
//
//	guest                                  host
//	Hello{token} + Launch     ----------> check version (major 2), token; start
//	                          <---------- Hello, LaunchResult{errno, message}
//	Data/EOF on stdin         ----------> process stdin
//	Signal, Resize            ---------->
//	                          <---------- Data/EOF on stdout, stderr
//	                          <---------- Exit (after both EOFs)
//	close                                 close (a closed connection before
//	                                      Exit means: kill the process group)
//
// The guest sends Hello and Launch in one write without waiting, and
// nothing else until it has the LaunchResult (so a relay may read the two
// frames with ReadFrame before it starts its Session). The relay
// answers with its own Hello (so each side can print a *VersionError
// naming both versions) then a LaunchResult; on refusal it closes after
// the LaunchResult. Exit travels after the last stdout/stderr bytes on the
// same ordered connection, so the guest never races the end of output.
//
// A side that ends the session over a protocol error of the peer sends a
// SessionError first (protocol 2.1); the peer's session then ends with a
// *PeerError carrying the reason. Resize frames waiting in the control
// queue coalesce into the latest size.
//
// Exit carries the full 32-bit code and, separately, "killed by signal N".
// The guest exits with Exit.Status(): 128+N for a signal, else Code&0xff.
//
// Errno values in LaunchResult use Linux numbers: ENOENT makes the
// interpreter exit 127, any other code 126; Message is printed as one line.
//
// Environment: the guest selects variables with LABENV (WSLENV's syntax:
// NAME/flags separated by ':'), sends each as EnvVar with its flags and
// LABENV itself first; the host applies /p and /l (path translation
// through its shares) and merges the variables into the program's
// environment (EnvUnset removes one). /u variables never leave the guest.
//
// # Using it
//
// Both ends wrap their net.Conn in a Session:
//
//	s := wire.NewSession(conn, wire.RoleHost) // or RoleGuest
//	defer s.Close()
//	m, err := s.Recv(ctx)                       // control messages, in order
//	err = s.Send(wire.NewHello(nil), &wire.LaunchResult{})
//	io.Copy(procStdin, s.Reader(wire.Stdin))    // Reader: io.Reader + WriterTo, CloseRead
//	io.Copy(s.Writer(wire.Stdout), procStdout)  // Writer: io.Writer + ReaderFrom
//	s.Writer(wire.Stdout).CloseWrite()          // EOF frame
//
// A Writer whose peer called CloseRead fails with ErrStreamClosed (treat
// it as EPIPE). A stream read after the connection ended without its EOF
// fails with ErrConnLost.
//
// Exposed host commands are stub files (FormatStub, ParseStub) that start
// with StubMagic and name the command.
package wire
