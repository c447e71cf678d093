package images_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"

	"lab/images"
)

// Boot the image with a pinned host key: the VM's initrd is the base image
// followed by a small archive of InstanceFiles.
func Example() {
	ctx := context.Background()
	img, err := images.Build(ctx, images.Options{Progress: os.Stderr})
	if err != nil {
		fmt.Println(err)
		return
	}
	clientPub, _, _ := ed25519.GenerateKey(rand.Reader) // the client keeps the private half
	hostPub, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	authorized, _ := ssh.NewPublicKey(clientPub)
	files, err := images.InstanceFiles(authorized, hostPriv)
	if err != nil {
		fmt.Println(err)
		return
	}
	out, _ := os.Create("vm-initrd.cpio")
	defer out.Close()
	base, _ := os.Open(img.Initrd)
	defer base.Close()
	io.Copy(out, base) // raw newc, a multiple of 4 bytes long
	images.WriteCPIO(out, files)

	pinned, _ := ssh.NewPublicKey(hostPub)
	_ = &ssh.ClientConfig{
		User:              "root",
		HostKeyCallback:   ssh.FixedHostKey(pinned),
		HostKeyAlgorithms: []string{pinned.Type()},
	}
	fmt.Println(strings.Join([]string{"qemu-system-x86_64", "-accel", "tcg", "-bios", "/usr/share/qemu/qboot.rom",
		"-kernel", img.Kernel, "-initrd", "vm-initrd.cpio", "-append", img.Cmdline + " lab.mount=host0:/mnt/host",
		"-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22", "-device", "virtio-net-pci,netdev=n0",
		"-virtfs", "local,path=/srv/share,mount_tag=host0,security_model=none"}, " "))
}
