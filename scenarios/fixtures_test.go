package scenarios

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"lab/internal/labtest"
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
		out, _, code := labtest.Output(t, cmd)
		if out != tt.want || code != tt.code {
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

// TestBuildBenchProbeOutsideModule builds lab bench's guest probe as an installed lab
// binary would: from a directory outside lab's module, with no source tree to build from.
func TestBuildBenchProbeOutsideModule(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no Go toolchain on PATH")
	}
	t.Chdir(t.TempDir())
	out := filepath.Join(t.TempDir(), "labbench")
	if err := BuildBenchProbe(context.Background(), out, runtime.GOARCH); err != nil {
		t.Fatal(err)
	}
	// The probe runs: one timed launch of the host's true prints one "ns D" line.
	b, err := exec.Command(out, "launch", "1", "true").Output()
	if err != nil {
		t.Fatalf("labbench launch 1 true: %v", err)
	}
	if f := strings.Fields(string(b)); len(f) != 2 || f[0] != "ns" {
		t.Errorf("labbench launch 1 true printed %q, want one \"ns D\" line", b)
	}
}

// TestBenchProbeModule keeps the probe's embedded module files in step with lab's own:
// the same versions of the modules it requires, and hashes lab's go.sum also holds. To
// regenerate after a bump: copy internal/labbench/*.go into an empty module that
// requires lab's versions of what it imports (x/crypto, x/sys), run go mod tidy, and copy its go.mod and
// go.sum over go.mod.txt and go.sum.txt.
func TestBenchProbeModule(t *testing.T) {
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	labMod, labSum := read("../go.mod"), read("../go.sum")
	probeMod, probeSum := read("internal/labbench/go.mod.txt"), read("internal/labbench/go.sum.txt")
	requires := 0
	inBlock := false
	for _, line := range strings.Split(probeMod, "\n") {
		var f []string
		switch {
		case line == "require (":
			inBlock = true
			continue
		case inBlock && line == ")":
			inBlock = false
			continue
		case inBlock:
			f = strings.Fields(line)
		case strings.HasPrefix(line, "require "):
			f = strings.Fields(strings.TrimPrefix(line, "require "))
		}
		if len(f) < 2 {
			continue
		}
		requires++
		if want := "\t" + f[0] + " " + f[1]; !strings.Contains(labMod, want) {
			t.Errorf("go.mod.txt requires %s %s; lab's go.mod has another version (regenerate, see this test's doc)", f[0], f[1])
		}
	}
	if requires == 0 {
		t.Errorf("go.mod.txt requires nothing; the probe imports golang.org/x/crypto/ssh")
	}
	for _, line := range strings.Split(strings.TrimSpace(probeSum), "\n") {
		if !strings.Contains(labSum, line+"\n") {
			t.Errorf("go.sum.txt line %q is not in lab's go.sum (regenerate, see this test's doc)", line)
		}
	}
}
