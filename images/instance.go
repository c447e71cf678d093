package images

import (
	"crypto"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/pem"
	"fmt"

	"golang.org/x/crypto/ssh"
)

// InstanceFiles returns what the image's SSH server needs for one VM: root's
// authorized_keys and the host key, so that the client can pin the host key
// instead of trusting it on first use. The host key is written in both
// OpenSSH's and dropbear's formats, so the files suit either server.
// Write them with WriteCPIO and give QEMU the base initrd followed by that
// archive. hostKey must be an ed25519.PrivateKey.
func InstanceFiles(authorizedKey ssh.PublicKey, hostKey crypto.Signer) ([]File, error) {
	if authorizedKey == nil {
		return nil, fmt.Errorf("images: InstanceFiles: no authorized key")
	}
	var priv ed25519.PrivateKey
	switch k := hostKey.(type) {
	case ed25519.PrivateKey:
		priv = k
	case *ed25519.PrivateKey:
		priv = *k
	default:
		return nil, fmt.Errorf("images: InstanceFiles: host key is %T, want ed25519.PrivateKey", hostKey)
	}
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("images: InstanceFiles: bad ed25519 key length %d", len(priv))
	}
	block, err := ssh.MarshalPrivateKey(priv, "lab host key")
	if err != nil {
		return nil, fmt.Errorf("images: InstanceFiles: %w", err)
	}
	return []File{
		dir("/root", 0o700),
		dir("/root/.ssh", 0o700),
		{Path: "/root/.ssh/authorized_keys", Mode: 0o600, Data: ssh.MarshalAuthorizedKey(authorizedKey)},
		dir("/etc/ssh", 0o755),
		{Path: opensshKeyPath, Mode: 0o600, Data: pem.EncodeToMemory(block)},
		dir("/etc/dropbear", 0o755),
		{Path: dropbearKeyPath, Mode: 0o600, Data: dropbearEd25519(priv)},
	}, nil
}

// dropbearEd25519 encodes an ed25519 key in dropbear's own host key format
// (what dropbearkey -t ed25519 writes): string "ssh-ed25519", then a string
// holding the 32-byte seed followed by the 32-byte public key, which is
// exactly Go's 64-byte ed25519.PrivateKey.
func dropbearEd25519(priv ed25519.PrivateKey) []byte {
	var b []byte
	putString := func(s []byte) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	putString([]byte(ssh.KeyAlgoED25519))
	putString(priv)
	return b
}
