package fsutil

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestTryLockHeld(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	l, err := TryLock(path)
	if err != nil {
		t.Fatal(err)
	}
	// flock locks belong to an open file, so a second open in this process conflicts as
	// another process would.
	if _, err := TryLock(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("second TryLock = %v, want ErrLocked", err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	l2, err := TryLock(path)
	if err != nil {
		t.Fatalf("TryLock after Unlock: %v", err)
	}
	l2.Unlock()
}

func TestLockFileWaitsForContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	l, err := TryLock(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = LockFile(ctx, path)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("LockFile on a held lock with an ended context = %v, want context.Canceled", err)
	}
	want := "waiting for the lock " + path + ": context canceled"
	if err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

func TestLockFileGetsReleasedLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	l, err := TryLock(path)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		l2, err := LockFile(context.Background(), path)
		if err == nil {
			l2.Unlock()
		}
		got <- err
	}()
	l.Unlock()
	acquiredAfterRelease(t, got)
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	for _, content := range []string{"one\n", "two\n"} {
		if err := WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != content {
			t.Fatalf("read back %q, %v; want %q", b, err, content)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("mode %v: others may read a 0600 file", fi.Mode())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("dir holds %v, want only state.json (no temporary files left)", names)
	}
	if err := WriteFile(filepath.Join(dir, "missing", "f"), nil, 0o600); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("WriteFile into a missing dir = %v, want ErrNotExist", err)
	}
}

// acquiredAfterRelease fails t unless the waiting LockFile, whose result got carries,
// takes the lock once its holder let go (bounded: a minute).
func acquiredAfterRelease(t *testing.T, got <-chan error) {
	t.Helper()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("LockFile after the holder let go: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("LockFile still waits after the holder let go")
	}
}
