package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runApp runs the command tree in-process and returns stdout and the error.
func runApp(t *testing.T, args ...string) (string, error) {
	t.Helper()
	app := newApp()
	app.SetArgs(args)
	var out bytes.Buffer
	app.SetOut(&out)
	app.SetErr(new(discard))
	err := app.Execute()
	return out.String(), err
}

// lab run checks a user's files before it looks for a VM: a typo is FILE:LINE.
func TestRunScenariosChecksFilesFirst(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	os.Mkdir("mine", 0o755)
	os.WriteFile(filepath.Join("mine", "myscen.txtar"), []byte("# mine\nguest true\ngeust false\n"), 0o644)
	_, err := runApp(t, "run", "--name", "no-such-vm", "--scenarios", "mine")
	want := `mine/myscen.txtar:3: unknown command "geust" (did you mean "guest"?)`
	if err == nil || err.Error() != want {
		t.Errorf("lab run --scenarios mine: %v; want %q", err, want)
	}
	if got := exitCode(err); got != 1 {
		t.Errorf("exit %d; want 1", got)
	}
}

func TestRunListScenarios(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	os.WriteFile("one.txtar", []byte("# One thing works.\nguest true\n"), 0o644)
	out, err := runApp(t, "run", "--list", "--scenarios", "one.txtar")
	if err != nil || strings.TrimSpace(out) != "one                      One thing works." {
		t.Errorf("lab run --list --scenarios one.txtar = %q, %v", out, err)
	}
	out, err = runApp(t, "run", "--list", "--scenarios", "one.txtar", "--builtin")
	if err != nil || !strings.Contains(out, "\none ") || !strings.Contains(out, "stdin_pipe ") {
		t.Errorf("with --builtin: %q, %v", out, err)
	}
	out, err = runApp(t, "help", "scenarios")
	if err != nil || !strings.Contains(out, "guest [-stdin FILE]") || !strings.Contains(out, "$SCENARIODIR") {
		t.Errorf("lab help scenarios: %v\n%s", err, out)
	}
}
