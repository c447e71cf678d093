package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"lab/internal/labtest"
	"lab/labfile"
)

// labFileFormats checks the formats of TestIntegrationCLI's lab file on the real VM: files
// in the scratch share (host dir scratch, guest /mnt/lab) run from the guest through
// binfmt_misc, the interpreter and the relay, with the runner the lab file gave.
func labFileFormats(t *testing.T, scratch string, guest func(args ...string) (int, string, string)) {
	t.Helper()
	dir := filepath.Join(scratch, "formats")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The rules are the kernel's: type E for the extension, type M for the magics.
	if code, out, _ := guest("cat", "/proc/sys/fs/binfmt_misc/lab-labsh"); code != 0 || !strings.Contains(out, "extension .labsh\n") {
		t.Errorf("rule lab-labsh: exit %d\n%s", code, out)
	}
	// A script by extension, run by the host's /bin/sh: argv and the exit status cross,
	// and $0 is the host path of the file (the relay ran `/bin/sh FILE ARGS...`).
	write("t.labsh", "echo \"sh:$#:$1:$(basename \"$0\")\"; uname -m >&2; exit 5\n")
	code, out, errOut := guest("sh", "-c", "cd /mnt/lab/formats && ./t.labsh 'a b'")
	if code != 5 || out != "sh:1:a b:t.labsh\n" || errOut != runtimeMachine()+"\n" {
		t.Errorf("./t.labsh 'a b': exit %d, stdout %q, stderr %q; want 5, %q, %q", code, out, errOut, "sh:1:a b:t.labsh\n", runtimeMachine()+"\n")
	}
	// A file with a custom magic, run by the host's python3 (the magic line is a comment).
	write("hello", "#!labpy \nimport sys\nprint('py', sys.argv[1:], sys.stdin.read().upper())\nsys.exit(3)\n")
	code, out, errOut = guest("sh", "-c", "echo in | /mnt/lab/formats/hello x 'y z'")
	if want := "py ['x', 'y z'] IN\n\n"; code != 3 || out != want {
		t.Errorf("hello (#!labpy): exit %d, stdout %q, stderr %q; want 3, %q", code, out, errOut, want)
	}
	// An aarch64 ELF program: no guest can run it (the guest is x86-64), the relay runs it
	// under qemu-aarch64-static on the host.
	if !labtest.Have(t, "qemu-aarch64-static") {
		return
	}
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "go.mod"), []byte("module armhello\n\ngo 1.21\n"), 0o644)
	os.WriteFile(filepath.Join(src, "main.go"), []byte(`package main

import (
	"fmt"
	"os"
	"runtime"
)

func main() {
	fmt.Println(runtime.GOARCH, os.Args[1:])
	os.Exit(4)
}
`), 0o644)
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "armhello"), ".")
	build.Dir = src
	build.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build (arm64): %v\n%s", err, b)
	}
	code, out, errOut = guest("/mnt/lab/formats/armhello", "a", "b c")
	if want := "arm64 [a b c]\n"; code != 4 || out != want {
		t.Errorf("armhello: exit %d, stdout %q, stderr %q; want 4, %q", code, out, errOut, want)
	}
}

// runtimeMachine is uname -m of the host.
func runtimeMachine() string {
	if runtime.GOARCH == "amd64" {
		return "x86_64"
	}
	return runtime.GOARCH
}

// The example in lab help labfile is a valid lab file.
func TestLabfileHelpExample(t *testing.T) {
	i := strings.Index(labfileHelp, "  name: ci")
	j := strings.Index(labfileHelp[i:], "\n\n")
	example := labfileHelp[i : i+j]
	look := func(name string) (string, error) { return "/usr/bin/" + name, nil }
	f, err := labfile.Parse("help.yaml", strings.NewReader(example), labfile.Options{LookPath: look, HostArch: "amd64"})
	if err != nil {
		t.Fatalf("%v\n%s", err, example)
	}
	if len(f.Formats) != 4 || f.Name != "ci" || f.MemoryMiB != 2048 {
		t.Errorf("parsed %+v", f)
	}
}

// applyLabFile: the file fills what no flag gave; flags given win; the relay's files
// (formats, env allow list, exposed commands) become state files written before boot.
func TestApplyLabFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "lab.yaml")
	os.WriteFile(p, []byte(`name: fromfile
distro: debian
arch: x86_64
isolated_windows: true
memory: 512M
cpus: 1
windows: true
scratch: false
shares: [{host: src, guest: /mnt/src}]
expose: [{program: /bin/echo, as: hostecho}]
env: {allow: [MYAPP_*]}
formats: [{name: labsh, extension: labsh, interpreter: /bin/sh}]
`), 0o644)
	lf, err := readLabFile(p)
	if err != nil {
		t.Fatal(err)
	}
	cmd := newUpCommand()
	if err := cmd.Flags().Parse([]string{"--cpus", "2"}); err != nil {
		t.Fatal(err)
	}
	s := upSettings{}
	s.cfg.CPUs = 2 // as the flag set it
	if err := applyLabFile(lf, cmd.Flags(), &s); err != nil {
		t.Fatal(err)
	}
	if s.cfg.Name != "fromfile" || s.cfg.MemoryMiB != 512 || s.cfg.CPUs != 2 || s.noWindows || !s.noScratch || s.noWinPath ||
		s.cfg.Distro != "debian" || s.cfg.Arch != "amd64" || !s.isolatedWindows {
		t.Errorf("settings %+v", s)
	}
	// Flags given win over the file's distro, arch and isolated_windows too.
	cmd2 := newUpCommand()
	if err := cmd2.Flags().Parse([]string{"--distro", "initramfs", "--arch", "arm64", "--isolated-windows=false"}); err != nil {
		t.Fatal(err)
	}
	s2 := upSettings{}
	s2.cfg.Distro, s2.cfg.Arch = "initramfs", "arm64" // as the flags set them
	if err := applyLabFile(lf, cmd2.Flags(), &s2); err != nil {
		t.Fatal(err)
	}
	if s2.cfg.Distro != "initramfs" || s2.cfg.Arch != "arm64" || s2.isolatedWindows {
		t.Errorf("flags did not win: %+v", s2)
	}
	if len(s.cfg.Shares) != 1 || s.cfg.Shares[0].HostPath != filepath.Join(dir, "src") || s.cfg.Shares[0].GuestPath != "/mnt/src" {
		t.Errorf("shares %+v", s.cfg.Shares)
	}
	want := map[string]string{
		"env-allow":    "# from " + p + " (env.allow)\nMYAPP_*\n",
		"exposed.json": "[\n  {\n    \"Name\": \"hostecho\",\n    \"HostPath\": \"/bin/echo\"\n  }\n]\n",
		"formats.json": "[\n  {\n    \"name\": \"labsh\",\n    \"extension\": \"labsh\",\n    \"runner\": {\n      \"kind\": \"interpreter\",\n      \"command\": [\n        \"/bin/sh\"\n      ]\n    }\n  }\n]\n",
	}
	if len(s.cfg.StateFiles) != len(want) {
		t.Errorf("state files %v", s.cfg.StateFiles)
	}
	for k, v := range want {
		if string(s.cfg.StateFiles[k]) != v {
			t.Errorf("%s:\n%s\nwant\n%s", k, s.cfg.StateFiles[k], v)
		}
	}
	// An exposed program that is not on the host fails with the key.
	os.WriteFile(p, []byte("expose: [no-such-program-here]\n"), 0o644)
	lf, err = readLabFile(p)
	if err != nil {
		t.Fatal(err)
	}
	err = applyLabFile(lf, cmd.Flags(), &upSettings{})
	if want := p + `: expose[0]: expose no-such-program-here: exec: "no-such-program-here": executable file not found in $PATH`; err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
}
