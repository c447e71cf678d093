package machine

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"lab/guest"
	"lab/provision"
	"lab/vm"
)

// The Windows personality's drive mapping must be one the interpreter (labpath) reads.
func TestInteropConfDrive(t *testing.T) {
	b, err := InteropConf(provision.Settings{
		RelayAddr: RelayAddr,
		TokenPath: provision.TokenPath,
		Shares:    []provision.Share{{Tag: DriveCTag, HostPath: "/data/lab/x/wine/drive_c", GuestPath: DriveCGuest}},
		Drives:    []provision.Drive{{Letter: DriveLetter, GuestPath: DriveCGuest}},
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := guest.ParseConfig(bytes.NewReader(b), "interop.conf")
	if err != nil {
		t.Fatalf("guest.ParseConfig: %v\n%s", err, b)
	}
	if len(c.Drives) != 1 || c.Drives[0].Letter != "C:" || c.Drives[0].Guest != DriveCGuest {
		t.Errorf("drives %+v from\n%s", c.Drives, b)
	}
}

func TestPrefixOfAndDataDir(t *testing.T) {
	sh := WindowsShare("/data/lab/x/wine")
	in := &vm.Instance{Shares: []vm.Share{{HostPath: "/srv", GuestPath: "/mnt/lab", Tag: "share0"}, sh}}
	if got := PrefixOf(in); got != "/data/lab/x/wine" {
		t.Errorf("PrefixOf = %q", got)
	}
	if got := PrefixOf(&vm.Instance{Shares: in.Shares[:1]}); got != "" {
		t.Errorf("PrefixOf without drive_c = %q, want none", got)
	}
	t.Setenv("XDG_DATA_HOME", "/xdg/data")
	if d, err := PrefixDir("vm1"); err != nil || d != "/xdg/data/lab/vm1/wine" {
		t.Errorf("PrefixDir = %q, %v", d, err)
	}
	if d, err := SharedPrefixDir(); err != nil || d != "/xdg/data/lab/windows" {
		t.Errorf("SharedPrefixDir = %q, %v", d, err)
	}
}

// Config gives a VM with /mnt/c the drive and the Windows PATH, unless NoWindowsPath.
func TestConfigWindows(t *testing.T) {
	dir := t.TempDir()
	in := vm.Instance{Name: "x", StateDir: dir, Shares: []vm.Share{WindowsShare("/data/lab/x/wine")}}
	b, _ := json.Marshal(in)
	if err := os.WriteFile(filepath.Join(dir, vm.FileInstance), b, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Config(dir, ProvisionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Settings.Drives) != 1 || !slices.Equal(cfg.WindowsPath, WindowsPath) {
		t.Errorf("drives %+v, windows path %q", cfg.Settings.Drives, cfg.WindowsPath)
	}
	cfg, err = Config(dir, ProvisionOptions{NoWindowsPath: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Settings.Drives) != 1 || cfg.WindowsPath != nil {
		t.Errorf("--no-windows-path: drives %+v, windows path %q", cfg.Settings.Drives, cfg.WindowsPath)
	}
}
