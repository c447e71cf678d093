package vm

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"lab/internal/labtest"
)

// TestChildrenDefaultSignals: the hostagent lab up starts and the QEMU the hostagent starts
// begin with every signal at its default disposition and none blocked, even when lab itself
// runs under nohup or as a shell's background job (children inherit ignored signals and the
// signal mask across exec: a QEMU ignoring SIGHUP and SIGINT would not end on them).
func TestChildrenDefaultSignals(t *testing.T) {
	if labtest.InNohup(t) {
		dir := t.TempDir()
		// QEMU's place: startQEMU runs the instance's argv with its output in qemu.log.
		q, err := startQEMU(&Instance{StateDir: dir, Argv: []string{"cat", "/proc/self/status"}}, nil, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		<-q.done
		b, err := os.ReadFile(filepath.Join(dir, FileQEMULog))
		if err != nil {
			t.Fatal(err)
		}
		labtest.NohupReport(t, "qemu", string(b))
		// The hostagent's: startAgent appends --state-dir DIR (sh's $0 here), output in ha.log.
		_, events, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer events.Close()
		_, exited, err := startAgent([]string{"sh", "-c", "cat /proc/self/status"}, dir, events)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-exited; err != nil {
			t.Fatal(err)
		}
		if b, err = os.ReadFile(filepath.Join(dir, FileAgentLog)); err != nil {
			t.Fatal(err)
		}
		labtest.NohupReport(t, "hostagent", string(b))
		return
	}
	labtest.NohupFresh(t, labtest.Nohup(t), "qemu", "hostagent")
}
