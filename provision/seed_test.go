package provision

import (
	"archive/tar"
	"bytes"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSeed(t *testing.T) {
	cfg := seedConfig(t, Share{Tag: "lab-scratch", HostPath: "/srv/x", GuestPath: "/mnt/lab"}, "default")
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

// TestSeedDisk renders the Debian guest's seed and then stands in for the guest after
// lab-instance ran it (the tar unpacked, the links and sshd's line made, systemd-binfmt
// registering lab.conf, lab-mounts mounting the shares): the first Provision after boot
// must find nothing to change.
func TestSeedDisk(t *testing.T) {
	cfg := seedConfig(t, Share{Tag: "lab-c", HostPath: "/srv/c", GuestPath: "/mnt/c"}, "deb")
	files, err := SeedDisk(cfg, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]BootFile{}
	for _, f := range files {
		if !strings.HasPrefix(f.Path, DiskSeedDir+"/") {
			t.Errorf("seed file %s is not staged under %s (the instance tar is unpacked over /)", f.Path, DiskSeedDir)
		}
		got[f.Path] = f
	}
	arch, ok := got[diskSeedArchive]
	if !ok || arch.Mode != 0o600 {
		t.Fatalf("no 0600 %s in the seed (it holds the token): %+v", diskSeedArchive, arch.Mode)
	}
	type entry struct {
		mode os.FileMode
		data []byte
	}
	tarred := map[string]entry{}
	tr := tar.NewReader(bytes.NewReader(arch.Data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: owner %d:%d, want root", h.Name, h.Uid, h.Gid)
		}
		data, _ := io.ReadAll(tr)
		tarred["/"+strings.TrimSuffix(h.Name, "/")] = entry{h.FileInfo().Mode(), data}
	}
	for _, w := range []struct {
		path string
		mode os.FileMode
	}{
		{"/etc/lab", fs.ModeDir | 0o755},
		{InterpreterPath, 0o755},
		{ConfigPath, 0o644},
		{TokenPath, 0o600},
		{BinfmtConfPath, 0o644},
		{GuardScriptPath, 0o755},
		{GuardUnitPath, 0o644},
		{GuardAptPath, 0o644},
		{WindowsPathFile, 0o644},
		{WSLEnvFile, 0o644},
	} {
		if e, ok := tarred[w.path]; !ok || e.mode != w.mode {
			t.Errorf("seed archive: %s mode %v (present %v), want %v", w.path, e.mode, ok, w.mode)
		}
	}
	if _, ok := tarred[StubsManifest]; ok {
		t.Errorf("the seed archive overwrites %s: a provisioned disk's manifest names the stubs to remove later", StubsManifest)
	}
	if _, ok := tarred["/usr/bin/notify-send"]; ok {
		t.Errorf("the seed writes a stub")
	}
	if g := string(got[diskSeedGuardSum].Data); g != sum([]byte(guardUnit))+"  "+GuardUnitPath+"\n" {
		t.Errorf("guard sum list %q", g)
	}

	s, ok := got[DiskSeedScriptPath]
	if !ok || s.Mode != 0o755 {
		t.Fatalf("no executable %s in the seed", DiskSeedScriptPath)
	}
	script := string(s.Data)
	setEnv := "SetEnv PATH=" + SSHDDefaultPath + ":/mnt/c/Windows/System32 WSL_DISTRO_NAME=deb WSL_INTEROP=" + ConfigPath
	order := []string{
		"[ -e " + WSLConfPath + " ] && exit 0",
		"sha256sum --status -c " + diskSeedGuardSum, // the disk's unit, before the tar replaces it
		"ln -sfn " + GuardUnitPath + " $l",
		"tar -x -f " + diskSeedArchive + " -C /",
		"[ -e " + StubsManifest + " ] || : > " + StubsManifest,
		"ln -sfn " + InterpreterPath + " " + LabpathPath,
		"ln -sfn " + InterpreterPath + " " + WslpathPath,
		"[ \"$cur\" != '" + setEnv + "' ]",
		"echo '" + setEnv + "' >> " + SSHDConfigPath,
		"> " + InterpreterSumPath,
		"[ -z \"$reload\" ] || systemctl daemon-reload",
	}
	at := 0
	for _, w := range order {
		i := strings.Index(script[at:], w)
		if i < 0 {
			t.Fatalf("seed script lacks %q after offset %d:\n%s", w, at, script)
		}
		at += i + len(w)
	}
	for _, bad := range []string{"/register", "kill -HUP", "mount -t"} {
		if strings.Contains(script, bad) {
			t.Errorf("seed script has %q: systemd-binfmt registers the rules, sshd is not running, lab-mounts mounts the shares:\n%s", bad, script)
		}
	}
	if out, err := exec.Command("sh", "-n", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("seed script does not parse: %v: %s", err, out)
	}

	// The guest after the seed, as the probe would report it.
	var pr strings.Builder
	pr.WriteString("arch x86_64\ninterpsum recorded\nmode /etc/lab 755\nmode " + TokenPath + " 600\n")
	for p, e := range tarred {
		if e.mode.IsRegular() {
			pr.WriteString("file " + p + " " + sum(e.data) + "\n")
		}
	}
	pr.WriteString("file " + StubsManifest + " " + sum(nil) + "\n")
	pr.WriteString("link " + LabpathPath + " " + InterpreterPath + "\nlink " + WslpathPath + " " + InterpreterPath + "\n")
	pr.WriteString("binfmt mounted\nsystemd yes\nguard enabled\napt yes\nprofilehook yes\nsshd yes\nsshdpath " + setEnv + "\n")
	for _, r := range DefaultRules(testMagic, true) {
		if !strings.Contains(string(tarred[BinfmtConfPath].data), r.String()+"\n") {
			t.Errorf("%s lacks rule %s", BinfmtConfPath, r.String())
		}
		pr.WriteString("rule " + r.Name + " enabled|interpreter " + r.Interpreter + "|flags: POF|offset 0|magic " + strings.TrimSpace(hexOf(r.Magic)) + "|\n")
	}
	pr.WriteString("mount lab-c /mnt/c\n")
	st, err := parseProbe(pr.String(), testMagic)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Exposed = nil
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	want, err := cfg.desired(st.goarch, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if p := plan(st, want); !p.empty() || len(changedSteps(p)) != 0 {
		t.Errorf("the first provisioning after the seed would change %v and run %q; want nothing", changedSteps(p), p.script())
	}
}

// seedConfig is a provisioning config as lab up makes it, with one share, an exposed
// command (which seeds leave out) and a fake interpreter.
func seedConfig(t *testing.T, share Share, distro string) Config {
	t.Helper()
	interp := filepath.Join(t.TempDir(), "lab-interop")
	if err := os.WriteFile(interp, []byte("\x7fELF interpreter"), 0o755); err != nil {
		t.Fatal(err)
	}
	return Config{
		Interpreter: interp,
		Token:       []byte(strings.Repeat("ab", 32)),
		InteropConf: func(s Settings) ([]byte, error) { return []byte("relay = " + s.RelayAddr + "\n"), nil },
		Settings:    Settings{RelayAddr: "vsock:2:5555"},
		Shares:      []Share{share},
		StubMagic:   testMagic,
		Exposed:     []Exposed{{Name: "notify-send", HostPath: "/usr/bin/notify-send"}},
		Stub:        func(e Exposed) []byte { return []byte("#!lab-host\n" + e.Name + "\n") },
		WindowsPath: []string{"/mnt/c/Windows/System32"},
		WSLNames:    true,
		DistroName:  distro,
	}
}
