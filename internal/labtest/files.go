package labtest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TempXDG points the XDG state, data and cache dirs at a fresh temp dir and returns lab's
// dirs in them (STATE/lab, DATA/lab, CACHE/lab), none of which exists yet.
func TempXDG(t testing.TB) (state, data, cache string) {
	t.Helper()
	base := t.TempDir()
	state, data, cache = filepath.Join(base, "state"), filepath.Join(base, "data"), filepath.Join(base, "cache")
	t.Setenv("XDG_STATE_HOME", state)
	t.Setenv("XDG_DATA_HOME", data)
	t.Setenv("XDG_CACHE_HOME", cache)
	return filepath.Join(state, "lab"), filepath.Join(data, "lab"), filepath.Join(cache, "lab")
}

// WriteSized writes size bytes to path, making its parent dirs: a file whose disk use
// a test can predict.
func WriteSized(t testing.TB, path string, size int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bytes.Repeat([]byte("x"), size), 0o644); err != nil {
		t.Fatal(err)
	}
}
