package fsutil

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestWatchPath: Next returns for a file created, appended to, or renamed into the directory
// after the watch began, and with the context's error when that ends first.
func TestWatchPath(t *testing.T) {
	dir := t.TempDir()
	w, err := WatchPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx := context.Background()
	for _, change := range []struct {
		name string
		do   func() error
	}{
		{"create", func() error { return os.WriteFile(filepath.Join(dir, "a"), []byte("1\n"), 0o644) }},
		{"append", func() error {
			f, err := os.OpenFile(filepath.Join(dir, "a"), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			f.WriteString("2\n")
			return f.Close()
		}},
		{"rename", func() error { return os.Rename(filepath.Join(dir, "a"), filepath.Join(dir, "b")) }},
	} {
		if err := change.do(); err != nil {
			t.Fatal(err)
		}
		if err := w.Next(ctx); err != nil {
			t.Fatalf("Next after %s: %v", change.name, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := w.Next(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with nothing changed and an ended context = %v, want context.Canceled", err)
	}
	// A later call with a live context still sees changes.
	os.WriteFile(filepath.Join(dir, "c"), nil, 0o644)
	if err := w.Next(ctx); err != nil {
		t.Fatalf("Next after an ended one: %v", err)
	}
	if _, err := WatchPath(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("WatchPath of a missing dir = %v, want ErrNotExist", err)
	}
}
