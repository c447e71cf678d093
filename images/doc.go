// Package images builds lab's guest image from the host's own package
// sources: one raw newc initramfs (busybox init, an SSH server with OpenSSH's
// sftp-server, socat, and the kernel modules for virtio-net, vsock,
// binfmt_misc and 9p in dependency order) and an uncompressed vmlinux that
// QEMU boots through its PVH entry. Build caches the result under the XDG
// cache dir, keyed by package versions, kernel and recipe; InstanceFiles and
// WriteCPIO make the small per-VM archive (authorized_keys and a pinned host
// key) that goes after the base initramfs.
//
// Packages are fetched with apt-get download (no root, nothing installed on
// the host) and unpacked here: a .deb is an ar archive, and the few lines of
// the ar reader avoid needing dpkg-deb. The newc writer is ours too because
// the kernel's unpacker wants things a general cpio library leaves to the
// caller (parents before children, uid/gid 0, device nodes, 4-byte aligned
// ends so archives concatenate); tests check it against
// github.com/cavaliergopher/cpio. Library and module closures use
// debug/elf, so neither ldd nor depmod/modprobe is needed.
package images
