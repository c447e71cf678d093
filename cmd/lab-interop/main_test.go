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

// Every launch in the guest execs this binary, and under TCG each page it touches costs a
// page fault that takes a fraction of a millisecond: it must not link packages it does not
// need (crypto/rand alone brought crypto/..., math/big and a 32 MiB BSS), nor ones that do
// work at init (regexp compiled into package variables, templates, net/http; net itself,
// whose inits cost about 8 faults per launch in the TCG guest: the interpreter dials with
// its own socket code, lab/guest.Conn).
func TestLeanDependencies(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	list := exec.Command(goBin, "list", "-deps", ".")
	list.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	heavy := []string{"crypto", "math/big", "net/http", "text/template", "html/template", "regexp", "compress", "log", "encoding/xml", "encoding/gob", "debug",
		"net", "vendor/golang.org/x/net", "golang.org/x/net", "github.com/mdlayher"}
	for _, h := range heavy {
		var linked []string
		for _, pkg := range strings.Fields(string(out)) {
			if pkg == h || strings.HasPrefix(pkg, h+"/") {
				linked = append(linked, pkg)
			}
		}
		if len(linked) > 0 {
			t.Errorf("lab-interop links %d packages under %s (%s): keep them off the interpreter's path", len(linked), h, strings.Join(linked[:min(3, len(linked))], ", "))
		}
	}
}
