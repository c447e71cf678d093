// Package vm runs lab's guest: it builds the QEMU command line (package vm/qemu),
// chooses the accelerator by trial, wires vsock (the kernel's vhost-vsock or lab's
// userspace backend), and supervises each VM from one host process, the hostagent
// (`lab hostagent`, like Lima's), which owns QEMU, the vsock backend and the Tasks
// that live as long as the VM (the relay), keeps one SSH connection to the guest and
// serves sessions over it on a Unix socket. State lives per VM name under the XDG
// state dir; status is computed from pids, sockets, QMP (package vm/qmp) and the
// hostagent, never stored.
//
// Go callers: Up boots, Connect returns a Client (Run, SFTP) over the kept
// connection, Inspect reports, Down stops and cleans up.
package vm
