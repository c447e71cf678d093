package scenarios

import (
	"bytes"
	"debug/pe"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"lab/internal/labtest"
)

func TestHelloPEStructure(t *testing.T) {
	b, err := HelloPE("hello from the host\n", 3)
	if err != nil {
		t.Fatal(err)
	}
	f, err := pe.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("debug/pe cannot read it: %v", err)
	}
	if f.Machine != pe.IMAGE_FILE_MACHINE_AMD64 || len(f.Sections) != 2 {
		t.Errorf("machine %#x, %d sections", f.Machine, len(f.Sections))
	}
	syms, err := f.ImportedSymbols()
	if err != nil || len(syms) != 3 || syms[0] != "GetStdHandle:KERNEL32.dll" {
		t.Errorf("imports %v, %v", syms, err)
	}
	oh, ok := f.OptionalHeader.(*pe.OptionalHeader64)
	if !ok || oh.Subsystem != pe.IMAGE_SUBSYSTEM_WINDOWS_CUI || oh.AddressOfEntryPoint != 0x1000 {
		t.Errorf("optional header %+v", f.OptionalHeader)
	}
}

// With Wine on the host, the PE really runs: its output and exit code come back.
func TestHelloPEUnderWine(t *testing.T) {
	wine, err := exec.LookPath("wine")
	if err != nil || testing.Short() {
		t.Skip("no wine on the host (or -short)")
	}
	b, err := HelloPE("hello from the host\n", 3)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	exe := filepath.Join(dir, "hello.exe")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(wine, exe)
	cmd.Env = append(os.Environ(), "WINEPREFIX="+filepath.Join(dir, "prefix"), "WINEDEBUG=-all", "WINEDLLOVERRIDES=mscoree,mshtml=")
	out, errs, code := labtest.Output(t, cmd)
	if out != "hello from the host\n" || code != 3 {
		t.Errorf("wine hello.exe: stdout %q, status %d; stderr:\n%s", out, code, errs)
	}
}
