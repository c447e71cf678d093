package images

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"os"
	"testing"

	"golang.org/x/crypto/ssh"
)

// testdata/dropbearkey_ed25519 was written by Debian 12's
// `dropbearkey -t ed25519` (a throwaway key): our encoder must give the same
// bytes for the same key.
func TestDropbearKeyFormat(t *testing.T) {
	want, err := os.ReadFile("testdata/dropbearkey_ed25519")
	if err != nil {
		t.Fatal(err)
	}
	// string "ssh-ed25519" (4+11 bytes), then string(seed || public key).
	seed := want[4+11+4 : 4+11+4+32]
	priv := ed25519.NewKeyFromSeed(seed)
	if !bytes.Equal(priv[32:], want[4+11+4+32:]) {
		t.Fatal("fixture's public half does not match its seed")
	}
	if got := dropbearEd25519(priv); !bytes.Equal(got, want) {
		t.Errorf("dropbearEd25519 =\n%x\nwant (dropbearkey)\n%x", got, want)
	}
}

func TestInstanceFiles(t *testing.T) {
	clientPub, _, _ := ed25519.GenerateKey(rand.Reader)
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	authorized, _ := ssh.NewPublicKey(clientPub)
	files, err := InstanceFiles(authorized, hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string]File{}
	for _, f := range files {
		byPath[f.Path] = f
	}
	ak := byPath["/root/.ssh/authorized_keys"]
	if got, _, _, _, err := ssh.ParseAuthorizedKey(ak.Data); err != nil || !bytes.Equal(got.Marshal(), authorized.Marshal()) || ak.Mode != 0o600 {
		t.Errorf("authorized_keys %q (mode %v): %v", ak.Data, ak.Mode, err)
	}
	if byPath["/root"].Mode.Perm() != 0o700 || byPath["/root/.ssh"].Mode.Perm() != 0o700 {
		t.Errorf("/root or /root/.ssh not 0700")
	}
	ok := byPath[opensshKeyPath]
	k, err := ssh.ParseRawPrivateKey(ok.Data)
	if err != nil || ok.Mode != 0o600 {
		t.Fatalf("OpenSSH host key (mode %v): %v", ok.Mode, err)
	}
	if got, isEd := k.(*ed25519.PrivateKey); !isEd || !bytes.Equal(*got, hostPriv) {
		t.Errorf("OpenSSH host key is %T, not the given key", k)
	}
	if db := byPath[dropbearKeyPath]; !bytes.Equal(db.Data, dropbearEd25519(hostPriv)) || db.Mode != 0o600 {
		t.Errorf("dropbear host key wrong")
	}
	// The files make a valid archive.
	if err := WriteCPIO(&bytes.Buffer{}, files); err != nil {
		t.Fatal(err)
	}

	rsaKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	if _, err := InstanceFiles(authorized, rsaKey); err == nil {
		t.Error("RSA host key accepted; the contract says ed25519")
	}
	if _, err := InstanceFiles(nil, hostPriv); err == nil {
		t.Error("nil authorized key accepted")
	}
}
