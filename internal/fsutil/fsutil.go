// Package fsutil is the one place lab takes file locks and replaces files atomically.
//
// Locks are flock(2) locks: the kernel drops them when the holder dies, so a crashed `lab up`
// or image build never leaves a stale lock behind, and a lock held by a live process (the
// hostagent's agent.lock) tells others it runs. Waiting for a lock is the kernel's blocking
// flock in a goroutine of its own, not a retry loop: the waiter wakes when the holder lets go
// (or dies), and the caller stops waiting when its context ends. flock(2) cannot be
// interrupted by a deadline, so a waiter whose caller gave up stays queued; it releases and
// closes the lock the moment the kernel grants it, so nobody is kept waiting by a caller
// that is gone.
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
	"os"

	"github.com/google/renameio/v2"
	"golang.org/x/sys/unix"
)

// ErrLocked is TryLock's answer when another process holds the lock.
var ErrLocked = errors.New("locked by another process")

// Lock is a flock held on a file (exclusive, or shared from LockShared).
type Lock struct{ f *os.File }

// Unlock releases the lock (and closes the file). Unlocking a nil Lock does nothing.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	// Closing drops the lock once no other descriptor of the open file is left: the file is
	// close-on-exec, so only a child handed it on purpose (File) shares it. No LOCK_UN: that
	// would take the lock from such a child too.
	return f.Close()
}

// File is the locked file, e.g. to hand the lock to a child process (ExtraFiles): a flock
// belongs to the open file, so the lock is held until the child's descriptor and this Lock
// are both closed.
func (l *Lock) File() *os.File { return l.f }

// LockFile takes an exclusive lock on path (created if needed), waiting until whoever holds
// it lets go or ctx ends.
func LockFile(ctx context.Context, path string) (*Lock, error) {
	return lock(ctx, path, unix.LOCK_EX)
}

// LockShared takes a shared lock on path (created if needed): several holders at once, none
// while an exclusive lock is held. It waits as LockFile does.
func LockShared(ctx context.Context, path string) (*Lock, error) {
	return lock(ctx, path, unix.LOCK_SH)
}

// TryLock takes an exclusive lock on path (created if needed) at once, or fails with
// ErrLocked when another process holds it.
func TryLock(path string) (*Lock, error) {
	f, err := open(path)
	if err != nil {
		return nil, err
	}
	if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

func lock(ctx context.Context, path string, how int) (*Lock, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("waiting for the lock %s: %w", path, err)
	}
	f, err := open(path)
	if err != nil {
		return nil, err
	}
	switch err := flock(f, how|unix.LOCK_NB); {
	case err == nil:
		return &Lock{f: f}, nil
	case !errors.Is(err, unix.EWOULDBLOCK):
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	got := make(chan error, 1)
	go func() { got <- flock(f, how) }()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		return &Lock{f: f}, nil
	case <-ctx.Done():
		go func() { // abandoned: let go as soon as the kernel grants it
			<-got
			f.Close()
		}()
		return nil, fmt.Errorf("waiting for the lock %s: %w", path, ctx.Err())
	}
}

func open(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// flock runs flock(2) on f's descriptor. Control keeps the descriptor from being closed
// under a blocked call; EINTR (a signal without SA_RESTART) only restarts the wait.
func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if ferr = unix.Flock(int(fd), how); ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return ferr
}

// WriteFile replaces path with data atomically: readers see the old content or the new,
// never part of it. perm applies (less the umask) when path is new; an existing file keeps
// its mode.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	return renameio.WriteFile(path, data, perm)
}
