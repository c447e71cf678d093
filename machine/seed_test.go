package machine

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"lab/images"
	"lab/provision"
	"lab/vm"
)

// TestSeedPerGuest: a machine on a disk of its own (Debian) gets the disk seed, staged
// where the image's lab-instance.service runs it; the initramfs guest gets the rc.d seed.
func TestSeedPerGuest(t *testing.T) {
	if images.DebianSeedScript != provision.DiskSeedScriptPath {
		t.Fatalf("the image runs %s, provisioning seeds %s", images.DebianSeedScript, provision.DiskSeedScriptPath)
	}
	interp := filepath.Join(t.TempDir(), "lab-interop")
	if err := os.WriteFile(interp, []byte("\x7fELF"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		disk   string
		script string
	}{
		{"initramfs", "", provision.SeedScriptPath},
		{"debian", "/data/lab/deb/disk.qcow2", provision.DiskSeedScriptPath},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			in := vm.Instance{Name: "deb", StateDir: dir, Arch: "amd64", Disk: tt.disk}
			b, _ := json.Marshal(in)
			if err := os.WriteFile(filepath.Join(dir, vm.FileInstance), b, 0o644); err != nil {
				t.Fatal(err)
			}
			files, err := seed(&in, ProvisionOptions{Interpreter: interp})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(files, func(f images.File) bool { return f.Path == tt.script && f.Mode == 0o755 }) {
				t.Errorf("no executable %s among the seed's files", tt.script)
			}
		})
	}
}
