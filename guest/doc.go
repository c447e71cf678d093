// Package guest is what runs inside the guest: the binfmt_misc
// interpreter (Main), path translation like wslpath (LabpathMain,
// TranslatePath), the interpreter's configuration (Config, LoadConfig)
// and the binfmt rules that install it (BinfmtRules).
//
// The interpreter is started by the kernel as `interp /full/path argv0
// args...` (rule flag P). It reads its root-owned config, connects to the
// relay (vsock or Unix socket, bounded connect and handshake), sends one
// wire.Launch, then copies stdin to the host until EOF, the host's stdout
// and stderr to fds 1 and 2, forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT and
// window size changes, and exits with the host program's status (128+N
// for signal N). On a foreground terminal it runs raw and restores the
// terminal on every path. See docs/DESIGN.md for the decisions.
//
// Start-up is kept lean on purpose (it is paid on every foreign exec): no
// logging setup, no JSON, a handful of syscalls before the connect, and
// buffers allocated only when data flows.
package guest
