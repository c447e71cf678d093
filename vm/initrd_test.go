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
	files, err := instanceFiles(&images.Image{}, sshPub, priv, extra)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeInitrd(out, basePath, files); err != nil {
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

// A disk guest's instance cpio holds only its BootFiles (the seed): its keys go through
// fw_cfg, and its initrd's /root is where the disk is mounted.
func TestInstanceFilesDisk(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	sshPub, _ := ssh.NewPublicKey(pub)
	extra := []images.File{{Path: "/run/lab/seed/apply", Mode: 0o755, Data: []byte("#!/bin/sh\n")}}
	got, err := instanceFiles(&images.Image{Distro: images.DistroDebian, Disk: "/base.qcow2"}, sshPub, priv, extra)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Path != "/run/lab/seed/apply" {
		t.Errorf("disk guest's instance files: %v, want only the seed", got)
	}
}

// A disk guest boots the state dir's initrd (the image's and its seed) only when it has
// BootFiles; without them the image's own, as before.
func TestQemuArgvDiskInitrd(t *testing.T) {
	dir := t.TempDir()
	in := &Instance{StateDir: dir, Arch: images.AMD64, Accel: "tcg", CPUs: 1, MemoryMiB: 512, SSHPort: 2222, Vsock: "user", Disk: filepath.Join(dir, "disk.qcow2")}
	img := &images.Image{Distro: images.DistroDebian, Disk: "/base.qcow2", Kernel: "/img/vmlinux", Initrd: "/img/lab-initrd.cpio"}
	for _, tc := range []struct {
		instance bool
		want     string
	}{{false, "/img/lab-initrd.cpio"}, {true, filepath.Join(dir, FileInitrd)}} {
		argv, err := qemuArgv("qemu-system-x86_64", in, img, tc.instance)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		for i, a := range argv {
			if a == "-initrd" && i+1 < len(argv) {
				got = argv[i+1]
			}
		}
		if got != tc.want {
			t.Errorf("instanceInitrd %v: -initrd %q, want %q", tc.instance, got, tc.want)
		}
	}
}
