package vm

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// Every Unix socket lab serves in a state dir is its owner's only: created in the 0700
// state dir and chmod 0600 right after bind. chmod rather than a umask, which is
// process-wide (other goroutines create files meanwhile); the 0700 dir covers the
// moment between bind and chmod. QEMU's QMP socket is created here too and handed to
// QEMU as a listening fd, since QEMU would create it with whatever umask it inherited.

// qmpFD is the fd QEMU serves QMP on: the first of exec.Cmd.ExtraFiles.
const qmpFD = 3

// listenPrivate listens on the Unix socket path (replacing a leftover file) with mode 0600.
func listenPrivate(path string) (*net.UnixListener, error) {
	os.Remove(path)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("vm: %w", err)
	}
	return l, nil
}

// listenQMP creates <dir>/qmp.sock and returns its listening socket as a file for QEMU's
// ExtraFiles (qemu.WithQMPListener(qmpFD)). The caller closes the file once QEMU has
// started: QEMU must hold the only copy, so that a connection after QEMU's death is
// refused rather than left waiting in the backlog.
func listenQMP(dir string) (*os.File, error) {
	l, err := listenPrivate(filepath.Join(dir, FileQMPSock))
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(false) // the file stays for QEMU; lab down removes the state dir
	f, err := l.File()
	l.Close()
	if err != nil {
		return nil, fmt.Errorf("vm: QMP socket: %w", err)
	}
	return f, nil
}
