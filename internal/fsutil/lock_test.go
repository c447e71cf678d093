package fsutil

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"lab/internal/labtest"
)

// holdEnv makes the test binary a lock holder (TestMain): it takes the exclusive lock on the
// file named, says "held", and keeps it until its stdin closes.
const holdEnv = "FSUTIL_TEST_HOLD"

func TestMain(m *testing.M) {
	if path := os.Getenv(holdEnv); path != "" {
		l, err := TryLock(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("held")
		bufio.NewReader(os.Stdin).ReadString('\n') // until the test lets go
		l.Unlock()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// holder starts another process holding the exclusive lock on path; calling the returned
// func makes it let go and waits for it to exit.
func holder(t *testing.T, path string) (release func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holdEnv+"="+path)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "held\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("lock holder: %q, %v", line, err)
	}
	done := false
	release = func() {
		if !done {
			done = true
			in.Close()
			cmd.Wait()
		}
	}
	t.Cleanup(release)
	return release
}

// TestLockFileWaitsInKernel: a locker waits while another process holds the lock, blocked in
// flock(2) (not retrying on a timer), and gets the lock when the holder lets go.
func TestLockFileWaitsInKernel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	release := holder(t, path)
	got := make(chan error, 1)
	var l *Lock
	go func() {
		var err error
		l, err = LockFile(context.Background(), path)
		got <- err
	}()
	labtest.WaitInSyscall(t, os.Getpid(), unix.SYS_FLOCK)
	select {
	case err := <-got:
		t.Fatalf("LockFile returned (%v) while another process holds the lock", err)
	default:
	}
	release()
	acquiredAfterRelease(t, got)
	if _, err := TryLock(path); !errors.Is(err, ErrLocked) {
		t.Errorf("TryLock while LockFile's lock is held = %v, want ErrLocked", err)
	}
	l.Unlock()
}

// TestLockFileCancelled: ending the context ends the wait with the context's error, and the
// abandoned waiter lets go of the lock as soon as it gets it.
func TestLockFileCancelled(t *testing.T) {
	for _, tc := range []struct {
		name string
		lock func(context.Context, string) (*Lock, error)
	}{
		{"exclusive", LockFile},
		{"shared", LockShared},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.lock")
			release := holder(t, path)
			ctx, cancel := context.WithCancel(context.Background())
			got := make(chan error, 1)
			go func() {
				_, err := tc.lock(ctx, path)
				got <- err
			}()
			labtest.WaitInSyscall(t, os.Getpid(), unix.SYS_FLOCK)
			cancel()
			var err error
			select {
			case err = <-got:
			case <-time.After(time.Minute):
				t.Fatal("the wait did not end with its context")
			}
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("lock with a cancelled context = %v, want context.Canceled", err)
			}
			if want := "waiting for the lock " + path + ": context canceled"; err.Error() != want {
				t.Errorf("error = %q, want %q", err, want)
			}
			release()
			// The abandoned waiter got the lock when the holder let go, and let go of it.
			ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			l, err := LockFile(ctx, path)
			if err != nil {
				t.Fatalf("LockFile after the abandoned wait: %v (the abandoned waiter keeps the lock)", err)
			}
			l.Unlock()
		})
	}
}

// TestLockShared: shared holders coexist; an exclusive locker waits for all of them.
func TestLockShared(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	ctx := context.Background()
	a, err := LockShared(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LockShared(ctx, path)
	if err != nil {
		t.Fatalf("a second shared lock: %v", err)
	}
	if _, err := TryLock(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("TryLock with shared holders = %v, want ErrLocked", err)
	}
	got := make(chan error, 1)
	go func() {
		l, err := LockFile(ctx, path)
		l.Unlock()
		got <- err
	}()
	a.Unlock()
	labtest.WaitInSyscall(t, os.Getpid(), unix.SYS_FLOCK)
	select {
	case err := <-got:
		t.Fatalf("LockFile returned (%v) while a shared holder is left", err)
	default:
	}
	b.Unlock()
	if err := <-got; err != nil {
		t.Fatalf("LockFile after the shared holders let go: %v", err)
	}
}
