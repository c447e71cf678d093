// Package host is the host side of lab's interop: the relay that guest interpreters
// connect to (over AF_VSOCK, the userspace vsock backend or a Unix socket) to run a
// program on the host.
//
// For each connection the relay
//   - authenticates: the peer CID on vsock (Config.PeerCID) and the per-VM token, compared
//     in constant time;
//   - authorises: the requested guest path must resolve, symlinks followed, to a file inside a
//     configured share, or name an exposed host command on the allow list; `..` components and
//     symlinks that leave the share are refused; no shell is ever involved;
//   - maps the guest working directory (with a documented fallback and a warning) and the
//     environment (only what LABENV names, with WSLENV's /p /l /u /w flags);
//   - runs the program with the runner its format asks for (direct exec, or Wine for `MZ`
//     files), in its own process group, on pipes or on a pty;
//   - streams stdin, stdout and stderr, forwards signals to the process group, resizes the pty,
//     and reports the exit status; a disconnect kills the process group.
//   - with Config.Procs (package proctree), holds every program and its descendants so that
//     they die with the relay's process, SIGKILL included.
//
// Relay.Serve takes any net.Listener, so the same relay serves kernel vsock
// (github.com/mdlayher/vsock), the userspace vsock backend and Unix sockets; Listen builds the
// first and the last from an address string ("vsock:PORT", "unix:PATH").
//
// Process management is written here on top of os/exec and github.com/creack/pty rather than
// taken from a supervisor library: the relay needs exactly process groups, pty sessions, a
// bounded drain of the output after exit (Wine's background services keep pipes open) and
// reaping that does not steal the statuses of children other parts of the same process own.
package host
