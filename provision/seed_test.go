package provision

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSeed(t *testing.T) {
	interp := filepath.Join(t.TempDir(), "lab-interop")
	if err := os.WriteFile(interp, []byte("\x7fELF interpreter"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Interpreter: interp,
		Token:       []byte(strings.Repeat("ab", 32)),
		InteropConf: func(s Settings) ([]byte, error) { return []byte("relay = " + s.RelayAddr + "\n"), nil },
		Settings:    Settings{RelayAddr: "vsock:2:5555"},
		Shares:      []Share{{Tag: "lab-scratch", HostPath: "/srv/x", GuestPath: "/mnt/lab"}},
		StubMagic:   testMagic,
		Exposed:     []Exposed{{Name: "notify-send", HostPath: "/usr/bin/notify-send"}},
		Stub:        func(e Exposed) []byte { return []byte("#!lab-host\n" + e.Name + "\n") },
		WindowsPath: []string{"/mnt/c/Windows/System32"},
		WSLNames:    true,
		DistroName:  "default",
	}
	files, err := Seed(cfg, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]BootFile{}
	for _, f := range files {
		got[f.Path] = f
	}
	for _, w := range []struct {
		path string
		mode os.FileMode
		data string
	}{
		{InterpreterPath, 0o755, "\x7fELF interpreter"},
		{ConfigPath, 0o644, "relay = vsock:2:5555\n"},
		{TokenPath, 0o600, strings.Repeat("ab", 32)},
		{StubsManifest, 0o644, ""}, // stubs are not seeded: the image's /usr/bin is not known
		{WSLEnvFile, 0o644, string(wslEnvScript(wslEnv(true, "default", true)))},
		{WindowsPathFile, 0o644, string(windowsPathScript(cfg.WindowsPath))},
	} {
		f, ok := got[w.path]
		if !ok {
			t.Errorf("no %s in the seed", w.path)
			continue
		}
		if f.Mode != w.mode || string(f.Data) != w.data {
			t.Errorf("%s: mode %v, data %q; want %v, %q", w.path, f.Mode, f.Data, w.mode, w.data)
		}
	}
	if _, ok := got["/usr/bin/notify-send"]; ok {
		t.Errorf("the seed writes a stub into the image's /usr/bin")
	}
	s, ok := got[SeedScriptPath]
	if !ok || s.Mode != 0o755 {
		t.Fatalf("no executable boot script %s in the seed: %+v", SeedScriptPath, s)
	}
	script := string(s.Data)
	if strings.Contains(script, ".lab-tmp") || strings.Contains(script, "mv -f") {
		t.Errorf("the boot script renames uploads; the files are in the archive already:\n%s", script)
	}
	// In apply's order: links and sshd's config, the interpreter's record, then the rules
	// (flag F opens the interpreter at registration).
	order := []string{
		"ln -sfn " + InterpreterPath + " " + LabpathPath,
		"if [ -f " + SSHDConfigPath + " ]; then",
		"SetEnv PATH=" + SSHDDefaultPath + ":/mnt/c/Windows/System32 WSL_DISTRO_NAME=default",
		"> " + InterpreterSumPath,
	}
	for _, r := range DefaultRules(testMagic, true) {
		order = append(order, r.String()+"' > "+BinfmtDir+"/register")
	}
	at := 0
	for _, w := range order {
		i := strings.Index(script[at:], w)
		if i < 0 {
			t.Fatalf("boot script lacks %q after offset %d:\n%s", w, at, script)
		}
		at += i + len(w)
	}
	if strings.Contains(script, "mount -t 9p") {
		t.Errorf("the boot script mounts shares the image's init mounts already:\n%s", script)
	}
}
