package fsutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// A Watch reports changes to a file, or to the files of a directory (inotify): a file
// created, written, closed after writing or renamed into it. Watching a file's directory sees
// a file that does not exist yet and one replaced by a rename (a rotated log); some files
// report changes of state as writes (a cgroup's cgroup.events). Readers wait for the
// kernel's event instead of re-reading on a timer.
type Watch struct {
	f   *os.File
	buf [64 << 10]byte
}

// WatchPath starts watching path (a file or a directory). Start watching before reading what
// is there, so no change made after that read is missed.
func WatchPath(path string) (*Watch, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", path, err)
	}
	const mask = unix.IN_CREATE | unix.IN_MODIFY | unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO
	if _, err := unix.InotifyAddWatch(fd, path, mask); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watch %s: %w", path, err)
	}
	// Non-blocking, so reads wait in Go's poller and a deadline can end them.
	return &Watch{f: os.NewFile(uintptr(fd), "inotify:"+path)}, nil
}

// Next waits until something changed since the last call (or since WatchPath), or ctx
// ends. The events are drained, not described: callers re-read what they
// watch.
func (w *Watch) Next(ctx context.Context) error {
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
func (w *Watch) Close() error { return w.f.Close() }
