// Package vm runs lab's guest: it builds the QEMU command line (package vm/qemu),
// chooses the accelerator by trial, wires vsock (the kernel's vhost-vsock or lab's
// userspace backend), and supervises each VM from one host process, the hostagent
// (`lab hostagent`, like Lima's), which owns QEMU, the vsock backend and the Tasks
// that live as long as the VM (the relay), holds QEMU's one QMP connection (through
// github.com/digitalocean/go-qemu, see monitor.go for the limits it handles), keeps one
// SSH connection to the guest and serves sessions over it on a Unix socket. The
// hostagent is the one control plane: the CLI and Tasks' clients ask it through
// requests on that socket (Client.Call; Env.Handle registers them), nothing is polled.
// State lives per VM name under the XDG state dir; status is computed on request from
// pids and the hostagent's answer, never stored.
//
// Go callers: Up boots, Connect returns a Client (Run, SFTP) over the kept
// connection, Inspect reports, Down stops and cleans up. Every QMP command lab uses goes
// through go-qemu; the hand-written client it replaced is gone.
package vm
