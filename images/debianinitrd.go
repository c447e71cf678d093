package images

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"lab/internal/progress"
	"os"
	"path/filepath"
	"strings"
)

// The Debian image boots with an initrd lab builds itself rather than initramfs-tools':
// busybox, the modules the root disk needs and a short /init. Debian's initrd runs udev
// and settles every device before it mounts the root, which under TCG costs from 10 s
// to over a minute on a loaded host; the root disk needs three modules. The initrd is
// made from the image's own kernel package (kept in CACHE/debian-debs) and the host's
// busybox-static, so it is rebuilt without running mmdebstrap again when only its
// recipe changes (its own key, lab-initrd.key in the image dir). The image has no
// initrd of Debian's (no initramfs-tools): a build makes this one before the image
// is complete.

const debianInitrdRecipe = "debian-initrd-3"

// debianInitrdModules are what mounting an ext4 root on virtio-blk needs (their
// dependencies follow from .modinfo; crc32c is a soft dependency that ext4 and jbd2
// request through the crypto API, so it is named), then every module the machine
// uses (the same as the initramfs guest's): the NIC, the RNG, vsock (interop), 9p
// (shares), binfmt_misc, fw_cfg (the instance's keys), the ACPI button and evdev
// (logind's power button). Loaded here, systemd-modules-load and udev's coldplug
// have nothing to do (they cost 19 s and 14 s under TCG).
var debianInitrdModules = []string{"virtio_pci", "virtio_blk", "crc32c_generic", "ext4",
	"virtio_net", "virtio_rng", "vmw_vsock_virtio_transport", "9pnet_virtio", "9p",
	"binfmt_misc", "qemu_fw_cfg", "button", "evdev"}

const debianInit = `#!/bin/busybox sh
# lab: the Debian guest's initrd. Load what the root disk needs, mount it, hand over to
# systemd. A failure ends init: the kernel panics and QEMU exits (panic=-1, -no-reboot),
# so lab up fails at once with these lines on the console.
export PATH=/bin
busybox mount -t devtmpfs devtmpfs /dev
busybox mount -t proc proc /proc
busybox mount -t sysfs sysfs /sys
while read -r m; do
	busybox insmod "$m" || echo "lab-initrd: insmod $m failed"
done < /etc/modules
i=0
while [ ! -b /dev/vda ]; do
	i=$((i + 1))
	if [ $i -gt 1200 ]; then
		echo "lab-initrd: no /dev/vda after 60 s"
		exit 1
	fi
	busybox usleep 50000
done
busybox mount -t ext4 -o rw,errors=remount-ro /dev/vda /root || { echo "lab-initrd: cannot mount /dev/vda"; exit 1; }
# lab up's instance cpio (appended to this one) holds provisioning's seed in /run/lab/seed
# (provision.SeedDisk): copy it to the new root's /run, a tmpfs mounted here that systemd
# keeps; lab-instance.service applies it. switch_root frees the initramfs. Not for a disk
# made by an older image, whose lab-instance would leave it in memory unapplied.
if [ -d /run/lab/seed ] && busybox grep -q /run/lab/seed /root/usr/local/lib/lab/instance 2>/dev/null; then
	if busybox mount -t tmpfs -o mode=0755,nosuid,nodev,size=20% tmpfs /root/run; then
		busybox mkdir -p /root/run/lab
		busybox cp -a /run/lab/seed /root/run/lab/seed || {
			busybox rm -rf /root/run/lab/seed
			echo "lab-initrd: cannot copy the provisioning seed; lab up provisions without it"
		}
	fi
fi
busybox umount /proc /sys
busybox mount --move /dev /root/dev
exec busybox switch_root /root /sbin/init
`

// ensureDebianInitrd builds imgDir/lab-initrd.cpio unless it is up to date.
func ensureDebianInitrd(ctx context.Context, imgDir, cache string, m Manifest, pr *progress.Progress) error {
	kp, ok := kernelPackage(m)
	if !ok {
		return fmt.Errorf("the image's manifest lists no linux-image-%s package", m.KernelVersion)
	}
	key := debianInitrdKey(kp)
	out := filepath.Join(imgDir, "lab-initrd.cpio")
	if initrdKeyIs(imgDir, key) {
		return nil
	}
	// The kernel and busybox packages and their unpacked trees are shared with the
	// initramfs image's builds.
	lock, err := lockCache(ctx, cache, pr)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	pr.Line("building the Debian image's initrd (busybox, %s)", strings.Join(debianInitrdModules, ", "))
	a := &apt{progress: pr}
	debs := filepath.Join(cache, "debian-debs")
	if _, err := os.Stat(filepath.Join(debs, kp.debFile())); err != nil {
		if err := a.download(ctx, debs, []Package{kp}); err != nil {
			return err
		}
	}
	ks, err := unpackKernelDeb(ctx, filepath.Join(debs, kp.debFile()), kernelPkgDir(cache, kp), func(int64) {}, nil)
	if err != nil {
		return fmt.Errorf("unpacking %s: %w", kp.Name, err)
	}
	mods, err := modulesOf(ks.ModulesDir, debianInitrdModules)
	if err != nil {
		return err
	}
	busybox, err := staticBusybox(ctx, a, cache)
	if err != nil {
		return err
	}
	files := []File{
		dir("/dev", 0o755), dir("/proc", 0o555), dir("/sys", 0o555), dir("/root", 0o700), dir("/bin", 0o755), dir("/etc", 0o755),
		{Path: "/dev/console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Major: 5, Minor: 1},
		{Path: "/bin/busybox", Mode: 0o755, Data: busybox},
		symlink("/bin/sh", "busybox"),
		script("/init", debianInit),
	}
	var list strings.Builder
	for _, md := range mods {
		p := "/lib/modules/" + ks.Version + "/" + md.Path
		files = append(files, File{Path: p, Mode: 0o644, Data: md.Data})
		list.WriteString(p + "\n")
	}
	files = append(files, text("/etc/modules", 0o644, list.String()))
	sortFiles(files)
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	err = writeCPIO(f, files)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, out)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.WriteFile(filepath.Join(imgDir, "lab-initrd.key"), []byte(key), 0o644)
}

// debianInitrdKey is lab-initrd.cpio's key: recipe, /init, modules, kernel package.
func debianInitrdKey(kp Package) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n%s %s\n", debianInitrdRecipe, debianInit, strings.Join(debianInitrdModules, " "), kp.Name, kp.Version)
	return hex.EncodeToString(h.Sum(nil))[:20]
}

// initrdKeyIs: imgDir's lab-initrd.cpio is there and was built with key (the key file
// is written after the cpio's rename, so a reader never sees a key for a partial cpio).
func initrdKeyIs(imgDir, key string) bool {
	b, err := os.ReadFile(filepath.Join(imgDir, "lab-initrd.key"))
	return err == nil && string(b) == key && fileExists(filepath.Join(imgDir, "lab-initrd.cpio"))
}

// debianInitrdCurrent: img boots lab's initrd and it is up to date, so nothing has to be
// written into the image dir (what needs the build lock).
func debianInitrdCurrent(img *Image) bool {
	kp, ok := kernelPackage(img.Manifest)
	return ok && initrdKeyIs(img.Dir, debianInitrdKey(kp))
}

// kernelPackage is the package of the image's kernel (linux-image-VERSION), when it
// came from one (not --kernel).
func kernelPackage(m Manifest) (Package, bool) {
	for _, p := range m.Packages {
		if p.Name == "linux-image-"+m.KernelVersion {
			return p, true
		}
	}
	return Package{}, false
}

// staticBusybox returns /bin/busybox of the host's busybox-static package (downloaded
// into CACHE/debs, as for the initramfs image).
func staticBusybox(ctx context.Context, a *apt, cache string) ([]byte, error) {
	if err := a.available(); err != nil {
		return nil, err
	}
	res, err := a.resolve(ctx, cache, []string{"busybox-static"}, false)
	if err != nil {
		return nil, err
	}
	var bb []Package
	for _, p := range res.Packages {
		if p.Name == "busybox-static" {
			bb = append(bb, p)
		}
	}
	if len(bb) != 1 {
		return nil, fmt.Errorf("apt resolved no busybox-static package")
	}
	debs := filepath.Join(cache, "debs")
	if err := a.download(ctx, debs, bb); err != nil {
		return nil, err
	}
	var data []byte
	err = walkDeb(ctx, filepath.Join(debs, bb[0].debFile()), func(int64) {}, func(h *tar.Header, r io.Reader) error {
		if h.Typeflag == tar.TypeReg && filepath.Clean(strings.TrimPrefix(h.Name, "./")) == "bin/busybox" {
			var err error
			data, err = io.ReadAll(r)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if data == nil {
		return nil, fmt.Errorf("%s has no /bin/busybox", bb[0].debFile())
	}
	return data, nil
}
