package fsutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// DirWatch reports changes to the files of one directory (inotify): a file created, written,
// closed after writing or renamed into it. Watching the directory, not a file, sees a file
// that does not exist yet and one replaced by a rename (a rotated log). Readers wait for the
// kernel's event instead of re-reading on a timer.
type DirWatch struct {
	f   *os.File
	buf [64 << 10]byte
}

// WatchDir starts watching dir. Start watching before reading what is there, so no change
// made after that read is missed.
func WatchDir(dir string) (*DirWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	const mask = unix.IN_CREATE | unix.IN_MODIFY | unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO
	if _, err := unix.InotifyAddWatch(fd, dir, mask); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	// Non-blocking, so reads wait in Go's poller and a deadline can end them.
	return &DirWatch{f: os.NewFile(uintptr(fd), "inotify:"+dir)}, nil
}

// Next waits until something changed in the directory since the last call (or since
// WatchDir), or ctx ends. The events are drained, not described: callers re-read what they
// watch.
func (w *DirWatch) Next(ctx context.Context) error {
	if err := w.f.SetReadDeadline(time.Time{}); err != nil { // a past call's ctx ended it
		return fmt.Errorf("watch: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { w.f.SetReadDeadline(time.Now()) })
	defer stop()
	if _, err := w.f.Read(w.buf[:]); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("watch: %w", err)
	}
	return nil
}

// Close stops watching.
func (w *DirWatch) Close() error { return w.f.Close() }
