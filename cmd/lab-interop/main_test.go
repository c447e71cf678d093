package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The real static binary answers to its names: `labpath` through a
// symlink translates paths; any other name is the interpreter.
func TestMultiCall(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "interop")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, name := range []string{"labpath", "wslpath"} {
		if err := os.Symlink(bin, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "interop.conf")
	if err := os.WriteFile(conf, []byte("relay = unix:/nonexistent\nshare = /mnt/c /srv/c C:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "LAB_INTEROP_CONFIG="+conf)

	cmd := exec.Command(filepath.Join(dir, "labpath"), "-w", "/mnt/c/Users/x")
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil || string(out) != "C:\\Users\\x\n" {
		t.Fatalf("labpath -w: %q, %v", out, err)
	}

	// As wslpath: WSL's trailing separator, and WSL's failure line and status.
	cmd = exec.Command(filepath.Join(dir, "wslpath"), `C:\`)
	cmd.Env = env
	out, err = cmd.Output()
	if err != nil || string(out) != "/mnt/c/\n" {
		t.Fatalf("wslpath 'C:\\': %q, %v", out, err)
	}
	cmd = exec.Command(filepath.Join(dir, "wslpath"), `C:\..`)
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || len(out) != 0 || stderr.String() != "wslpath: C:\\..: Invalid argument\n" {
		t.Fatalf("wslpath 'C:\\..': %q, %q, %v", out, stderr.String(), err)
	}

	// As the interpreter without binfmt's arguments: one line, exit 126.
	cmd = exec.Command(bin)
	cmd.Env = env
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 126 || !strings.Contains(string(out), "binfmt_misc") {
		t.Fatalf("interpreter: %q, %v", out, err)
	}

	// Static: no program interpreter (PT_INTERP) and no dynamic section.
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Fatalf("lab-interop is dynamically linked (%v)", p.Type)
		}
	}
}
