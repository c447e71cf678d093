package vm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"lab/internal/fsutil"
)

// A state dir whose processes are gone reads as stopped, with QEMU's last exit, and
// Down removes it.
func TestInspectAndDownStale(t *testing.T) {
	base := t.TempDir()
	t.Setenv("XDG_STATE_HOME", base)
	dir := filepath.Join(base, "lab", "old")
	os.MkdirAll(dir, 0o700)
	if err := writeJSON(filepath.Join(dir, FileInstance), Instance{Name: "old", StateDir: dir, Accel: "tcg", Vsock: "user", CID: 5, SSHPort: 2222}); err != nil {
		t.Fatal(err)
	}
	// A pid that exists but is not ours (this test process) must not count as QEMU.
	os.WriteFile(filepath.Join(dir, FileQEMUPID), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
	writeJSON(filepath.Join(dir, FileQEMUExit), QEMUExit{Time: time.Now(), Error: "signal: killed"})
	st, err := Inspect(context.Background(), "old")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "stopped" || st.QEMUAlive || st.AgentAlive || st.CID != 5 || st.LastExit == nil {
		t.Errorf("status = %+v", st)
	}
	if len(st.Problems) != 1 || !strings.Contains(st.Problems[0], "signal: killed") {
		t.Errorf("problems = %q", st.Problems)
	}
	sts, err := List(context.Background())
	if err != nil || len(sts) != 1 || sts[0].Name != "old" {
		t.Errorf("List = %v, %v", sts, err)
	}
	if err := Down(context.Background(), "old"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("Down left the state dir")
	}
	if _, err := Inspect(context.Background(), "old"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Inspect after Down = %v, want ErrNotFound", err)
	}
	if err := Down(context.Background(), "old"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Down of a missing VM = %v, want ErrNotFound", err)
	}
}

// The agent lock, not the pid file, says whether a hostagent lives.
func TestAgentAliveLock(t *testing.T) {
	dir := t.TempDir()
	if agentAlive(dir) {
		t.Fatal("alive without a lock file")
	}
	l, err := fsutil.TryLock(filepath.Join(dir, FileAgentLock))
	if err != nil {
		t.Fatal(err)
	}
	if !agentAlive(dir) {
		t.Error("not alive while the lock is held")
	}
	if _, err := fsutil.TryLock(filepath.Join(dir, FileAgentLock)); !errors.Is(err, fsutil.ErrLocked) {
		t.Errorf("second lock = %v, want fsutil.ErrLocked", err)
	}
	l.Unlock()
	if agentAlive(dir) {
		t.Error("alive after the lock was released")
	}
}

// A state dir being set up by another Up (up.lock held) is refused, not removed.
func TestClaimWhileStarting(t *testing.T) {
	base := t.TempDir()
	cfg := Config{Name: "x", StateDir: filepath.Join(base, "x")}
	_, _, l, err := claim(cfg, base)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	if _, _, _, err := claim(cfg, base); err == nil || !strings.Contains(err.Error(), "being started") {
		t.Fatalf("second claim = %v", err)
	}
	if _, err := os.Stat(cfg.StateDir); err != nil {
		t.Fatal("the first claim's dir was removed")
	}
}

// Up and Down never remove a directory that is not a VM state dir.
func TestForeignDirUntouched(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "mine")
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, "precious"), []byte("x"), 0o600)
	if _, _, _, err := claim(Config{Name: "mine", StateDir: dir}, base); err == nil || !strings.Contains(err.Error(), "not a lab state directory") {
		t.Errorf("claim of a foreign dir = %v", err)
	}
	if err := Down(context.Background(), dir); err == nil {
		t.Error("Down of a foreign dir succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "precious")); err != nil {
		t.Fatal("a foreign file was removed")
	}
}
