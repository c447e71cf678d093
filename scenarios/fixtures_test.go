package scenarios

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

func TestBuildFixtures(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no Go toolchain on PATH")
	}
	f, err := BuildFixtures(context.Background(), t.TempDir(), runtime.GOARCH, true)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		args  []string
		stdin string
		want  string
		code  int
	}{
		{"host-hello", nil, "", "hello from the host\n", 0},
		{"host-echo", []string{"a b", ""}, "", "arg1=\"a b\"\narg2=\"\"\n", 0},
		{"host-cat", nil, "xyz", "xyz", 0},
		{"host-exit", []string{"7"}, "", "", 7},
		{"host-kill", []string{"TERM"}, "", "", -1},
		{"host-env", []string{"LABFIX_UNSET_VAR"}, "", "LABFIX_UNSET_VAR unset\n", 0},
	}
	for _, tt := range tests {
		cmd := exec.Command(f.Host[tt.name], tt.args...)
		cmd.Stdin = strings.NewReader(tt.stdin)
		out, err := cmd.Output()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if string(out) != tt.want || code != tt.code {
			t.Errorf("%s %q: %q status %d, want %q status %d", tt.name, tt.args, out, code, tt.want, tt.code)
		}
	}
	b, err := os.ReadFile(f.PE[0])
	if err != nil || len(b) < 2 || string(b[:2]) != "MZ" {
		t.Errorf("%s is not a PE file (%v)", f.PE[0], err)
	}
	out, err := exec.Command(f.LabExec, f.PE[0]).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Exec format error") {
		// Unless the host has a binfmt rule for MZ (Wine's), the kernel refuses it.
		if _, statErr := os.Stat("/proc/sys/fs/binfmt_misc/wine"); statErr != nil {
			t.Errorf("labexec on a PE file: %q, %v; want Exec format error", out, err)
		}
	}
}
