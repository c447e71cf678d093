package vm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"lab/internal/labtest"
	"lab/vm/qemu"
)

// TestQMPListener runs a real QEMU (no guest) on the QMP socket lab creates: the file
// is 0600 from the start, QEMU answers on it, and once QEMU is killed a connection is
// refused (lab kept no copy of the listening socket that would leave it hanging).
func TestQMPListener(t *testing.T) {
	labtest.NeedVM(t)
	dir := t.TempDir()
	f, err := listenQMP(dir)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, FileQMPSock)
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("qmp.sock: mode %v; want a socket with 0600", fi.Mode())
	}
	argv, err := qemu.Command(qemu.WithQMPListener(qmpFD))
	if err != nil {
		t.Fatal(err)
	}
	// The monitor's -chardev and -mon, on a machine with nothing else.
	cmd := exec.Command(argv[0], append([]string{"-machine", "none", "-accel", "tcg", "-nodefaults", "-display", "none"}, argv[len(argv)-4:]...)...)
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Start()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := connectMonitor(ctx, sock)
	if err != nil {
		t.Fatalf("%v (QEMU: %s)", err, stderr.Bytes())
	}
	if _, err := m.queryStatus(ctx); err != nil {
		t.Errorf("query-status: %v", err)
	}
	m.close()
	// Killed, QEMU cannot unlink the socket (after quit it does): a copy of the listening
	// socket left in lab would now accept connections nobody serves.
	cmd.Process.Kill()
	exited <- <-exited
	if _, err := connectMonitor(ctx, sock); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial after QEMU exited: %v; want connection refused", err)
	}
}
