package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// consoleSays returns a channel closed once the file at path (the guest's serial
// console log, which QEMU appends to) holds marker, read as the file grows: inotify
// says when QEMU wrote, so nothing polls. The watch ends with ctx. The file must exist
// (startQEMU creates it empty); an error means no watch (the caller polls instead).
func consoleSays(ctx context.Context, path, marker string) (<-chan struct{}, error) {
	if marker == "" {
		return nil, errors.New("vm: empty console marker")
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("vm: watching the console: %w", err)
	}
	// Nonblocking, so os.File's reads go through the runtime's poller and Close
	// interrupts them.
	ino := os.NewFile(uintptr(fd), "inotify")
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_MODIFY); err != nil {
		ino.Close()
		return nil, fmt.Errorf("vm: watching the console %s: %w", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		ino.Close()
		return nil, fmt.Errorf("vm: watching the console: %w", err)
	}
	said := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { ino.Close() })
	go func() {
		defer f.Close()
		defer stop()
		defer ino.Close()
		m := []byte(marker)
		var tail []byte // the last len(marker)-1 bytes read: a marker split across writes
		buf := make([]byte, 32<<10)
		events := make([]byte, 4096)
		for {
			// Read everything written so far; a watch set up before QEMU wrote
			// anything sees every write after this read as an event.
			for {
				n, err := f.Read(buf)
				if n > 0 {
					seen := append(tail, buf[:n]...)
					if bytes.Contains(seen, m) {
						close(said)
						return
					}
					tail = append([]byte(nil), seen[max(len(seen)-len(m)+1, 0):]...)
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					return
				}
			}
			if _, err := ino.Read(events); err != nil {
				return // ctx ended (ino closed)
			}
		}
	}()
	return said, nil
}
