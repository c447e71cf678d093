package vm

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cavaliergopher/cpio"
	"golang.org/x/crypto/ssh"

	"lab/images"
)

// The instance initrd is the base archive, then one archive with the keys and the
// BootFiles; the kernel reads both, later entries replacing earlier ones.
func TestWriteInitrdBootFiles(t *testing.T) {
	dir := t.TempDir()
	var base bytes.Buffer
	if err := images.WriteCPIO(&base, []images.File{{Path: "/etc/lab/interop.conf", Mode: 0o644, Data: []byte("base\n")}}); err != nil {
		t.Fatal(err)
	}
	basePath := filepath.Join(dir, "base.cpio")
	os.WriteFile(basePath, base.Bytes(), 0o644)
	pub, priv, _ := ed25519.GenerateKey(nil)
	sshPub, _ := ssh.NewPublicKey(pub)
	extra := []images.File{{Path: "/etc/lab/interop.conf", Mode: 0o644, Data: []byte("seeded\n")}, {Path: "/etc/lab/rc.d/50-x", Mode: 0o755, Data: []byte("#!/bin/sh\n")}}
	out := filepath.Join(dir, "initrd.cpio")
	if err := writeInitrd(out, basePath, sshPub, priv, extra); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	off := (base.Len() + 3) &^ 3
	got := map[string]string{}
	r := cpio.NewReader(bytes.NewReader(b[off:]))
	for {
		h, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(r)
		got[h.Name] = string(data)
		if h.Name == "etc/lab/rc.d/50-x" && h.Mode.Perm() != 0o755 {
			t.Errorf("%s: mode %v, want 0755", h.Name, h.Mode)
		}
	}
	if got["etc/lab/interop.conf"] != "seeded\n" || got["etc/lab/rc.d/50-x"] != "#!/bin/sh\n" {
		t.Errorf("instance archive holds %q", got)
	}
	if _, ok := got["root/.ssh/authorized_keys"]; !ok {
		t.Errorf("instance archive lost the keys: %v", got)
	}
}
