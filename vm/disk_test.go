package vm

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"lab/images"
)

func TestInstanceTar(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), FileInstanceTar)
	if err := writeInstanceTar(p, sp, hostPriv); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	tr := tar.NewReader(bytes.NewReader(b))
	got := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: owner %d:%d, want root", h.Name, h.Uid, h.Gid)
		}
		got[h.Name] = string(data)
		if h.Typeflag == tar.TypeReg && h.Mode != 0o600 {
			t.Errorf("%s: mode %o, want 600", h.Name, h.Mode)
		}
	}
	if got["root/.ssh/authorized_keys"] != string(ssh.MarshalAuthorizedKey(sp)) {
		t.Errorf("authorized_keys = %q", got["root/.ssh/authorized_keys"])
	}
	if !strings.Contains(got["etc/ssh/ssh_host_ed25519_key"], "OPENSSH PRIVATE KEY") {
		t.Errorf("no OpenSSH host key in %v", got)
	}
	for n := range got {
		if strings.Contains(n, "dropbear") {
			t.Errorf("%s in the Debian guest's tar", n)
		}
	}
}

// TestEnsureDisk makes a machine's overlay over a base qcow2 (real qemu-img), keeps it
// on the next call, and refuses another distro's image on it.
func TestEnsureDisk(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is missing (make deps)")
	}
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", base, "64M").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	img := &images.Image{Distro: images.DistroDebian, Disk: base, Manifest: images.Manifest{Key: "debian-k1"}}
	disk := filepath.Join(dir, "data", "m1", "disk.qcow2")
	m, err := ensureDisk("m1", disk, img, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.BaseDisk != base || m.ImageKey != "debian-k1" || m.Distro != images.DistroDebian || m.Disk != disk {
		t.Errorf("machine.json = %+v", m)
	}
	out, err := exec.Command("qemu-img", "info", disk).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "backing file: "+base) {
		t.Fatalf("qemu-img info: %v\n%s", err, out)
	}
	// Written data stays: the second call keeps the file.
	st1, _ := os.Stat(disk)
	var progress bytes.Buffer
	img2 := *img
	img2.Manifest.Key = "debian-k2"
	if _, err := ensureDisk("m1", disk, &img2, &progress); err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(disk)
	if !os.SameFile(st1, st2) {
		t.Error("ensureDisk replaced an existing disk")
	}
	if want := "lab: m1 keeps its disk on image debian-k1 (lab would build debian-k2 today; lab delete --name m1 to start over on it)\n"; progress.String() != want {
		t.Errorf("progress %q, want %q", progress.String(), want)
	}
	other := &images.Image{Distro: "other", Disk: base}
	_, err = ensureDisk("m1", disk, other, nil)
	if want := `vm: machine "m1" is a debian machine; it cannot boot the other image (lab delete --name m1, or choose another --name)`; err == nil || err.Error() != want {
		t.Errorf("ensureDisk(other) = %v, want %s", err, want)
	}
	if err := os.Remove(base); err != nil {
		t.Fatal(err)
	}
	_, err = ensureDisk("m1", disk, img, nil)
	if err == nil || !strings.Contains(err.Error(), `vm: machine "m1"'s base image `+base+" is gone") {
		t.Errorf("ensureDisk without base = %v", err)
	}
}
