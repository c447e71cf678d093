// Package fsutil is the one place lab takes file locks and replaces files atomically.
//
// Locks are flock(2) locks (github.com/gofrs/flock): the kernel drops them when the holder
// dies, so a crashed `lab up` or image build never leaves a stale lock behind, and a lock
// held by a live process (the hostagent's agent.lock) tells others it runs. Waiting for a
// lock ends with the caller's context.
//
// Writes go through github.com/google/renameio/v2: a temporary file in the same directory,
// fsync, rename. A reader (another lab command, the hostagent, a crash) sees the old file or
// the new one, never a torn one.
package fsutil

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/gofrs/flock"
	"github.com/google/renameio/v2"
)

// ErrLocked is TryLock's answer when another process holds the lock.
var ErrLocked = errors.New("locked by another process")

// retry is how often Lock tries again while another process holds the lock; flock(2) has
// no way to wait with a deadline, and these waits are rare (two builds of one cache).
const retry = 100 * time.Millisecond

// Lock is an exclusive flock held on a file.
type Lock struct{ f *flock.Flock }

// Unlock releases the lock (and closes the file). Unlocking a nil Lock does nothing.
func (l *Lock) Unlock() error {
	if l == nil {
		return nil
	}
	return l.f.Unlock()
}

// LockFile takes an exclusive lock on path (created if needed), waiting until whoever holds
// it lets go or ctx ends.
func LockFile(ctx context.Context, path string) (*Lock, error) {
	f := flock.New(path)
	ok, err := f.TryLockContext(ctx, retry)
	if err != nil {
		f.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("waiting for the lock %s: %w", path, err)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if !ok {
		return nil, fmt.Errorf("lock %s: %w", path, ErrLocked)
	}
	return &Lock{f: f}, nil
}

// TryLock takes an exclusive lock on path (created if needed) at once, or fails with
// ErrLocked when another process holds it.
func TryLock(path string) (*Lock, error) {
	f := flock.New(path)
	ok, err := f.TryLock()
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if !ok {
		return nil, fmt.Errorf("lock %s: %w", path, ErrLocked)
	}
	return &Lock{f: f}, nil
}

// WriteFile replaces path with data atomically: readers see the old content or the new,
// never part of it. perm applies (less the umask) when path is new; an existing file keeps
// its mode.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	return renameio.WriteFile(path, data, perm)
}
