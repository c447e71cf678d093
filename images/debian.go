package images

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"lab/internal/progress"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Distros lab builds guest images of.
const (
	// DistroInitramfs is the default guest: busybox init and OpenSSH in an
	// initramfs (fast; no persistent root).
	DistroInitramfs = "initramfs"
	// DistroDebian is Debian 12 with systemd, bash, apt, OpenSSH and sudo on an
	// ext4 disk (qcow2): what WSL users live in.
	DistroDebian = "debian"
)

// Distros lists the accepted values of Options.Distro.
var Distros = []string{DistroInitramfs, DistroDebian}

// debianRecipe names everything that changes what the Debian image holds; it is
// part of the cache key.
const debianRecipe = "debian-5"

// debianSuite is Debian 12's code name: the host's apt sources for it are the ones
// the image is built from.
const debianSuite = "bookworm"

// debianPackages are installed on top of mmdebstrap's "apt" variant (Essential:
// yes packages and apt). No initramfs-tools: lab boots its own initrd
// (debianinitrd.go), and generating Debian's initrd only cost build time; the
// kernel's dependency on an initramfs tool is met by debianInitrdPackage.
var debianPackages = []string{
	"systemd", "systemd-sysv", "udev", "dbus", "openssh-server", "sudo",
	"linux-image-amd64", "kmod", "iproute2", "ca-certificates", "procps",
}

// debianInitrdPackage is the control file of a package lab installs in the image,
// with no files, that provides linux-initramfs-tool: linux-image-amd64 needs
// initramfs-tools or a provider, and lab boots the machine with lab-initrd.cpio
// instead. In the guest, "dpkg -s lab-initrd" says so.
const debianInitrdPackage = `Package: lab-initrd
Version: 1
Architecture: all
Maintainer: lab <lab@localhost>
Provides: linux-initramfs-tool
Section: admin
Priority: optional
Description: lab boots this machine with its own initrd
 lab builds lab-initrd.cpio (busybox and the modules the root disk needs)
 from this kernel's package on the host and boots it beside the kernel, so
 no initramfs is generated in the guest. Installing initramfs-tools replaces
 this package and works as on any Debian system.
`

// debianDpkgExcludes are dpkg path-exclude/path-include lines: no manuals,
// translations, docs (copyright files stay) or drivers for hardware a QEMU guest
// never has. They are written by an extract hook rather than given as --dpkgopt:
// mmdebstrap filters every extracted essential package through a Python
// tarfilter when its dpkg options hold path-exclude lines, which cost 72 s of CPU
// per build (11 s without it).
var debianDpkgExcludes = []string{
	"path-exclude=/usr/share/man/*", "path-exclude=/usr/share/locale/*",
	"path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright",
	"path-exclude=/lib/modules/*/kernel/drivers/gpu/*",
	"path-exclude=/lib/modules/*/kernel/drivers/media/*",
	"path-exclude=/lib/modules/*/kernel/drivers/net/wireless/*",
	"path-exclude=/lib/modules/*/kernel/drivers/infiniband/*",
	"path-exclude=/lib/modules/*/kernel/drivers/staging/*",
	"path-exclude=/lib/modules/*/kernel/sound/*",
}

// debianExtractHook runs after mmdebstrap extracted the essential packages and
// before dpkg installs anything: dpkg's own path filters from here on (they stay
// in the image, so apt in the guest leaves the same files out), and dpkg does not
// fsync each file while the image is built (removed again by debianCustomize: a
// machine's disk keeps dpkg's safe default).
func debianExtractHook() string {
	return "set -eu\nprintf '%s\\n' '" + strings.Join(debianDpkgExcludes, "' '") + `' > "$1/etc/dpkg/dpkg.cfg.d/lab-excludes"
echo force-unsafe-io > "$1/etc/dpkg/dpkg.cfg.d/lab-build"
`
}

// debianDiskSize is the root file system's size. The base qcow2 holds only what
// was written (about 0.7 GB); the guest sees the rest as free space for apt.
const debianDiskSize = "8G"

// DebianCmdline is the kernel command line of the Debian image.
const DebianCmdline = "console=ttyS0 root=/dev/vda rw net.ifnames=0 quiet panic=-1 cryptomgr.notests=1 mitigations=off no_timer_check tsc=reliable systemd.gpt_auto=0"

// debianStatusWord is added to the image's command line at boot (not part of the
// disk's key): failed units on the console.
const debianStatusWord = "systemd.show_status=error"

// FwCfgInstance is the fw_cfg name under which lab up hands the Debian guest this
// boot's SSH keys (a tar of InstanceFiles); the image's lab-instance.service
// unpacks it before sshd starts. fw_cfg files are readable by root only in the guest.
const FwCfgInstance = "opt/lab/instance.tar"

// DebianSeedApply is provision.DiskSeedScriptPath (images does not import provision;
// machine's tests hold them equal): the seed's script lab-instance.service runs when
// lab's initrd copied a seed there from lab up's instance cpio.
const DebianSeedApply = "/run/lab/seed/apply"

// debianCustomize runs as mmdebstrap's customize hook with the root file system
// in $1, after lab's files were synced in. It leaves the kernel, the initrd and
// dpkg's status in /tmp/lab-out for a copy-out hook (mmdebstrap's cleanup then
// empties /tmp).
const debianCustomize = `set -eu
R=$1
chown -R 0:0 "$R/etc/systemd/system" "$R/etc/systemd/journald.conf.d" "$R/usr/local/lib/lab" "$R/etc/ssh/sshd_config.d" "$R/etc/sudoers.d"
chmod 0755 "$R/usr/local/lib/lab"/*
chmod 0440 "$R/etc/sudoers.d/lab"
echo lab > "$R/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 lab\n::1 localhost ip6-localhost ip6-loopback\n' > "$R/etc/hosts"
# No entry for /: lab's initrd mounts it rw, and an entry made systemd wait for
# dev-vda.device (udev's coldplug, 34 s under TCG) to fsck and remount it.
printf '# lab: / is mounted rw by lab'"'"'s initrd (see lab-initrd.cpio); no entry, so no wait for the device\n' > "$R/etc/fstab"
rm -f "$R/etc/resolv.conf"
printf 'nameserver 10.0.2.3\n' > "$R/etc/resolv.conf"
# Every machine gets its own host key at each boot (lab-instance.service).
rm -f "$R"/etc/ssh/ssh_host_*
chroot "$R" useradd --create-home --shell /bin/bash --groups sudo --comment "lab user" lab
chroot "$R" systemctl enable lab-net.service lab-instance.service lab-mounts.service
# Not needed in a lab machine, and each costs boot time under TCG.
chroot "$R" systemctl mask apt-daily.timer apt-daily-upgrade.timer \
	e2scrub_all.timer e2scrub_reap.service fstrim.timer getty@tty1.service serial-getty@ttyS0.service \
	systemd-timesyncd.service \
	systemd-modules-load.service systemd-journal-flush.service systemd-random-seed.service \
	systemd-update-utmp.service systemd-update-utmp-runlevel.service systemd-pstore.service \
	sys-kernel-debug.mount sys-kernel-tracing.mount dev-hugepages.mount \
	systemd-tmpfiles-clean.timer dpkg-db-backup.timer modprobe@dm_mod.service modprobe@drm.service
rm -f "$R/etc/dpkg/dpkg.cfg.d/lab-build"
# What the essential packages' extraction wrote before dpkg's path filters applied.
rm -rf "$R"/usr/share/man/* "$R"/usr/share/locale/*
find "$R/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
mkdir -p "$R/tmp/lab-out"
cp "$R"/boot/vmlinuz-* "$R/tmp/lab-out/vmlinuz"
cp "$R/var/lib/dpkg/status" "$R/tmp/lab-out/dpkg-status"
rm -f "$R"/var/cache/apt/archives/*.deb
`

// debianFiles are lab's files in the Debian image (relative to /).
var debianFiles = map[string]string{
	"usr/local/lib/lab/instance": `#!/bin/sh
# lab: install this boot's SSH keys, which lab up passes through QEMU's fw_cfg.
f=/sys/firmware/qemu_fw_cfg/by_name/` + FwCfgInstance + `/raw
# lab's initrd loaded qemu_fw_cfg; modprobe is for an older initrd.
[ -d /sys/firmware/qemu_fw_cfg ] || modprobe qemu_fw_cfg 2>/dev/null
if [ -e "$f" ]; then
	tar -x -f "$f" -C / || exit 1
	for d in /root/.ssh /home/lab/.ssh; do mkdir -p "$d" && chmod 700 "$d"; done
	cp /root/.ssh/authorized_keys /home/lab/.ssh/authorized_keys
	chown -R lab:lab /home/lab/.ssh
	chmod 600 /root/.ssh/authorized_keys /home/lab/.ssh/authorized_keys /etc/ssh/ssh_host_ed25519_key
	rm -rf /etc/dropbear
else
	echo "lab-instance: no $f: was this machine started by lab up?" >&2
fi
# Provisioning's head start (provision.SeedDisk), which lab's initrd copied from lab up's
# instance cpio: before systemd-binfmt (it registers the seeded lab.conf) and sshd. A
# failure leaves the provisioning after boot to do it all.
s=` + DebianSeedApply + `
if [ -x "$s" ]; then
	"$s" || echo "lab-instance: $s failed ($?): lab up provisions without the seed" >&2
fi
exit 0
`,
	"usr/local/lib/lab/mounts": `#!/bin/sh
# lab: mount the 9p shares lab up names on the kernel command line (lab.mount=TAG:DIR),
# as the initramfs guest's init does: the shares are chosen per lab up.
for w in $(cat /proc/cmdline); do
	case "$w" in
	lab.mount=*:*)
		spec=${w#lab.mount=}
		tag=${spec%%:*}
		dir=${spec#*:}
		mkdir -p "$dir"
		mountpoint -q "$dir" && continue
		mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 "$tag" "$dir" ||
			echo "lab-mounts: mounting 9p share $tag on $dir failed" >&2
		;;
	esac
done
exit 0
`,
	"etc/systemd/system/lab-instance.service": `[Unit]
Description=lab: this boot's SSH keys (from lab up through fw_cfg) and provisioning seed
# Early (beside sysinit, not after basic.target): sshd waits for it, and it needs
# only the root file system, which lab's initrd mounted. Before systemd-binfmt: the
# seed writes /etc/binfmt.d/lab.conf.
DefaultDependencies=no
After=local-fs.target
Before=ssh.service systemd-binfmt.service shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/lib/lab/instance

[Install]
WantedBy=multi-user.target
`,
	"etc/systemd/system/lab-mounts.service": `[Unit]
Description=lab: the machine's 9p shares (/mnt/c, /mnt/lab, --share)
# Early, as lab-instance.service: sshd waits for the shares (lab's initrd loaded 9p).
DefaultDependencies=no
After=local-fs.target
Before=ssh.service shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/lib/lab/mounts

[Install]
WantedBy=multi-user.target
`,
	// Not systemd-networkd: its start timed out under a loaded TCG host (no network,
	// no SSH); QEMU's user network needs one static address, as the initramfs guest's
	// init sets it.
	"usr/local/lib/lab/net": `#!/bin/sh
# lab: the guest's address on QEMU's user network (no DHCP wait).
ip link set lo up
i=0
while :; do
	dev=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)
	[ -n "$dev" ] && break
	i=$((i + 1))
	if [ $i -gt 600 ]; then
		echo "lab-net: no network interface after 60 s" >&2
		exit 1
	fi
	sleep 0.1
done
ip link set "$dev" up
ip addr replace 10.0.2.15/24 dev "$dev"
ip route replace default via 10.0.2.2
`,
	"etc/systemd/system/lab-net.service": `[Unit]
Description=lab: the guest's address on QEMU's user network (10.0.2.15)
# Early, as lab-instance.service: sshd waits for the network.
DefaultDependencies=no
After=local-fs.target
Wants=network.target
Before=network.target ssh.service shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/lib/lab/net

[Install]
WantedBy=multi-user.target
`,
	"etc/ssh/sshd_config.d/lab.conf": `# lab: root and the lab user log in with the machine's key only.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
MaxSessions 100
MaxStartups 100:30:200
UseDNS no
`,
	// udev's coldplug of every device cost 14 s under TCG and loaded modules lab's
	// initrd already loaded; logind still needs the input devices' tags to see the
	// ACPI power button that lab down presses (QMP system_powerdown).
	"etc/systemd/system/systemd-udev-trigger.service.d/lab.conf": `# lab: only the input devices (logind's power button); the modules are loaded by lab's initrd.
[Service]
ExecStart=
ExecStart=-udevadm trigger --type=devices --action=add --subsystem-match=input
`,
	// The journal stays in memory: no flush to /var/log at boot.
	"etc/systemd/journald.conf.d/lab.conf": "# lab: the journal in memory (no flush to disk at boot)\n[Journal]\nStorage=volatile\n",
	"etc/sudoers.d/lab":                    "lab ALL=(ALL:ALL) NOPASSWD: ALL\n",
}

// debianSources returns the host's apt source entries for Debian 12, in one-line
// sources.list format: the image is built from exactly what this host's apt uses
// (a mirror, a snapshot, a proxy-fronted URI), and lab names no archive itself.
func debianSources(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-config", "dump").Output()
	if err != nil {
		return "", fmt.Errorf("apt-config dump: %w: lab builds the Debian image from this host's apt sources", err)
	}
	cfg := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok {
			cfg[k] = strings.TrimSuffix(strings.Trim(v, "\";"), "\"")
		}
	}
	root := orDefault(cfg["Dir"], "/")
	etc := filepath.Join(root, orDefault(cfg["Dir::Etc"], "etc/apt"))
	if strings.HasPrefix(cfg["Dir::Etc"], "/") {
		etc = cfg["Dir::Etc"]
	}
	files := []string{filepath.Join(etc, orDefault(cfg["Dir::Etc::sourcelist"], "sources.list"))}
	parts, _ := filepath.Glob(filepath.Join(etc, orDefault(cfg["Dir::Etc::sourceparts"], "sources.list.d"), "*"))
	sort.Strings(parts)
	files = append(files, parts...)
	var lines []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		switch {
		case strings.HasSuffix(f, ".sources"):
			lines = append(lines, parseDeb822Sources(data)...)
		case strings.HasSuffix(f, ".list") || f == files[0]:
			lines = append(lines, parseOneLineSources(data)...)
		}
	}
	var keep []string
	for _, l := range lines {
		if s := sourceSuite(l); s == debianSuite || strings.HasPrefix(s, debianSuite+"-") || strings.HasPrefix(s, debianSuite+"/") {
			keep = append(keep, l)
		}
	}
	if len(keep) == 0 {
		return "", fmt.Errorf("this host's apt sources (%s) have no entry for Debian 12 (%s): lab builds the Debian image from them; add one or use the default image (--distro initramfs)", etc, debianSuite)
	}
	return strings.Join(keep, "\n") + "\n", nil
}

// parseOneLineSources returns the "deb ..." lines of a sources.list file.
func parseOneLineSources(data []byte) []string {
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		l, _, _ = strings.Cut(l, "#")
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "deb ") || strings.HasPrefix(l, "deb\t") {
			out = append(out, l)
		}
	}
	return out
}

// parseDeb822Sources turns the enabled "Types: deb" stanzas of a .sources file into
// one-line entries (one per URI and suite).
func parseDeb822Sources(data []byte) []string {
	var out []string
	var clean bytes.Buffer
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue // comments between fields would end a stanza in parseControl
		}
		clean.WriteString(l + "\n")
	}
	for _, st := range parseControl(clean.Bytes()) {
		if strings.EqualFold(st["Enabled"], "no") || !contains(strings.Fields(st["Types"]), "deb") {
			continue
		}
		opts := ""
		if k := st["Signed-By"]; k != "" && !strings.Contains(k, "\n") {
			opts = "[signed-by=" + k + "] "
		}
		for _, uri := range strings.Fields(st["URIs"]) {
			for _, suite := range strings.Fields(st["Suites"]) {
				out = append(out, strings.TrimSpace("deb "+opts+uri+" "+suite+" "+st["Components"]))
			}
		}
	}
	return out
}

// sourceFields are the words of a one-line "deb [opts] URI SUITE COMPONENTS" entry
// without its [opts]: "deb", the URI, the suite, the components.
func sourceFields(line string) []string {
	f := strings.Fields(line)
	if len(f) > 1 && strings.HasPrefix(f[1], "[") {
		for i := 1; i < len(f); i++ {
			if strings.HasSuffix(f[i], "]") {
				f = append(f[:1], f[i+1:]...)
				break
			}
		}
	}
	return f
}

// sourceSuite is the suite word of a one-line entry.
func sourceSuite(line string) string {
	f := sourceFields(line)
	if len(f) < 3 {
		return ""
	}
	return f[2]
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// debianKey is the Debian image's cache key: the recipe (packages, lab's files, the
// customize script, the command line), the sources, and the host's Release files of
// those sources (their content changes whenever the archive's does).
func debianKey(sources string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n%s\n%s\n%s\n", debianRecipe, strings.Join(debianPackages, " "), debianInitrdPackage,
		debianExtractHook(), debianCustomize, DebianCmdline, sources)
	names := make([]string, 0, len(debianFiles))
	for n := range debianFiles {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(h, "file %s %x\n", n, sha256.Sum256([]byte(debianFiles[n])))
	}
	for _, f := range releaseFiles(sources) {
		if b, err := os.ReadFile(f); err == nil {
			fmt.Fprintf(h, "release %s %x\n", filepath.Base(f), sha256.Sum256(b))
		}
	}
	return "debian-" + hex.EncodeToString(h.Sum(nil))[:20]
}

// releaseFiles are the host's InRelease/Release files in apt's lists dir for sources.
func releaseFiles(sources string) []string {
	var out []string
	for _, l := range strings.Split(sources, "\n") {
		f := sourceFields(l)
		if len(f) < 3 {
			continue
		}
		uri := f[1]
		if _, rest, ok := strings.Cut(uri, "://"); ok {
			uri = rest
		}
		// apt's list file names: the URI without scheme, '/' as '_'.
		prefix := strings.ReplaceAll(strings.TrimSuffix(uri, "/"), "/", "_") + "_dists_" + strings.ReplaceAll(f[2], "/", "_")
		for _, n := range []string{"_InRelease", "_Release"} {
			p := filepath.Join("/var/lib/apt/lists", prefix+n)
			if _, err := os.Stat(p); err == nil {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// buildDebian builds (or finds in the cache) the Debian image: mmdebstrap
// installs Debian 12 from the host's apt sources, mkfs.ext4 -d makes the tree a
// root disk and qemu-img turns that into the qcow2 base machines boot an overlay
// of. The cache key (debianKey) needs no download, so a cached image is reused
// without running mmdebstrap.
func buildDebian(ctx context.Context, opts Options) (*Image, error) {
	pr := progress.New(opts.Progress)
	cache, err := openCache(opts)
	if err != nil {
		return nil, err
	}
	if opts.Kernel != "" || opts.Modules != "" {
		return nil, errors.New("--kernel/--modules apply to the initramfs image only: the Debian image boots its own linux-image-amd64")
	}
	sources, err := debianSources(ctx)
	if err != nil {
		if !opts.Rebuild {
			if img, ok := cachedDebian(ctx, err, cache, pr); ok {
				return img, nil
			}
		}
		return nil, err
	}
	key := debianKey(sources)
	dir := filepath.Join(cache, "images", key)
	// A complete image (published by one rename) with its initrd up to date is used
	// without the build lock, which a build of another image may hold for many minutes.
	if img, ok := upToDate(pr, dir, opts.Rebuild, loadCurrentDebian); ok {
		return img, nil
	}
	// Its own lock, not the cache's: mmdebstrap runs for minutes and touches only
	// the Debian image dirs and CACHE/debian-debs, so builds of the initramfs image
	// (every other VM test package in make test) need not wait for it. The steps
	// that share the cache's kernels and packages (the initrd) take the cache's lock.
	lock, err := lockFile(ctx, filepath.Join(cache, ".lock-debian"), pr)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	if img, ok := upToDate(pr, dir, opts.Rebuild, loadDebian); ok {
		return withInitrd(ctx, img, cache, pr), nil
	}
	mode, err := debianBuildMode()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	tmp, removeTmp, err := workDir(dir)
	if err != nil {
		return nil, err
	}
	defer removeTmp()
	srcFile, err := stageDebianInputs(tmp, sources)
	if err != nil {
		return nil, err
	}
	if err := buildInitrdPackage(ctx, tmp); err != nil {
		return nil, err
	}
	debs := filepath.Join(cache, "debian-debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return nil, err
	}
	// As root the tree is written to a directory; without root, to a tarball
	// (a directory would hold the user namespace's ids).
	target := filepath.Join(tmp, "root")
	if mode == "unshare" {
		target += ".tar"
	}
	pr.Line("building the Debian 12 image with mmdebstrap --mode=%s from this host's apt sources (a few minutes; packages are kept in %s)", mode, debs)
	if err := runMmdebstrap(ctx, pr, mmdebstrapArgs(mode, debs, tmp, target, srcFile)); err != nil {
		if errors.Is(err, errSourcesUnreachable) && !opts.Rebuild {
			if img, ok := cachedDebian(ctx, err, cache, pr); ok {
				return img, nil
			}
		}
		return nil, err
	}
	raw, err := makeRootDisk(ctx, pr, tmp, target)
	if err != nil {
		return nil, err
	}
	pvh, err := installDebianKernel(ctx, pr, tmp)
	if err != nil {
		return nil, err
	}
	if err := convertDisk(ctx, pr, raw, filepath.Join(tmp, "disk.qcow2")); err != nil {
		return nil, err
	}
	return writeDebianImage(ctx, pr, tmp, dir, cache, key, pvh, start)
}

// ErrNoDebianSources means this host's apt sources have no Debian 12 entry, so no
// Debian image can be built here (a host property, not a missing tool).
var ErrNoDebianSources = errors.New("no Debian 12 package sources")

// DebianBuildable reports whether this host can build the Debian image: the tools
// (mmdebstrap, mkfs.ext4, qemu-img; what make deps installs) and apt sources for
// Debian 12 (ErrNoDebianSources). It downloads nothing.
func DebianBuildable(ctx context.Context) error {
	if _, err := debianBuildMode(); err != nil {
		return err
	}
	if _, err := debianSources(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrNoDebianSources, err)
	}
	return nil
}

// cachedDebian is the newest Debian image in the cache, for a build that cannot
// reach the host's package sources (cause): an offline host keeps working with
// what it built before.
func cachedDebian(ctx context.Context, cause error, cache string, pr *progress.Progress) (*Image, bool) {
	img, ok := newestDebian(cache)
	if !ok {
		return nil, false
	}
	pr.Line("%v: using the cached Debian image %s built %s", cause, img.Dir, img.Manifest.Built.Format(time.RFC3339))
	return withInitrd(ctx, img, cache, pr), true
}

// debianBuildMode checks the tools a Debian build runs before it starts (it takes
// minutes) and returns mmdebstrap's mode: root as root, unshare otherwise.
func debianBuildMode() (string, error) {
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return "", errors.New("the Debian image is built with mmdebstrap: install it (apt-get install mmdebstrap, or make deps)")
	}
	for _, t := range []string{"mkfs.ext4", "qemu-img"} {
		if _, err := exec.LookPath(t); err != nil {
			return "", fmt.Errorf("the Debian image needs %s: install e2fsprogs and qemu-utils (or make deps)", t)
		}
	}
	mode := "unshare"
	if os.Geteuid() == 0 {
		mode = "root"
	}
	if mode == "unshare" && !mke2fsReadsTar() {
		return "", errors.New("building the Debian image without root needs mke2fs -d to read a tarball, which it does through libarchive: install libarchive13 (or make deps), or build as root")
	}
	return mode, nil
}

// stageDebianInputs writes what mmdebstrap copies in (lab's files under
// tmp/files) and the host's sources as tmp/sources.list, whose path it returns.
func stageDebianInputs(tmp, sources string) (string, error) {
	for name, content := range debianFiles {
		p := filepath.Join(tmp, "files", name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	srcFile := filepath.Join(tmp, "sources.list")
	if err := os.WriteFile(srcFile, []byte(sources), 0o644); err != nil {
		return "", err
	}
	return srcFile, nil
}

// mmdebstrapArgs is mmdebstrap's command line: the packages, what dpkg leaves
// out, the package cache kept in debs across builds, lab's files and
// customisation, and the kernel, initrd and dpkg status copied out to tmp.
func mmdebstrapArgs(mode, debs, tmp, target, srcFile string) []string {
	return []string{
		"--mode=" + mode, "--variant=apt",
		"--include=" + strings.Join(debianPackages, ","),
		"--extract-hook=" + debianExtractHook(),
		// Before apt installs the kernel, so that its initramfs dependency is met
		// (apt hands a .deb path given to --include to dpkg through a host temp dir,
		// which dpkg in the chroot cannot see).
		"--essential-hook=copy-in " + filepath.Join(tmp, "lab-initrd.deb") + " /tmp",
		`--essential-hook=chroot "$1" dpkg -i /tmp/lab-initrd.deb && rm "$1/tmp/lab-initrd.deb"`,
		// Downloaded packages are kept in the cache across builds.
		"--skip=essential/unlink",
		`--setup-hook=mkdir -p "$1"/var/cache/apt/archives/`,
		"--setup-hook=sync-in " + debs + " /var/cache/apt/archives/",
		"--customize-hook=sync-out /var/cache/apt/archives " + debs,
		"--customize-hook=sync-in " + filepath.Join(tmp, "files") + " /",
		"--customize-hook=" + debianCustomize,
		"--customize-hook=copy-out /tmp/lab-out " + tmp,
		debianSuite, target, srcFile,
	}
}

// buildInitrdPackage writes tmp/lab-initrd.deb (debianInitrdPackage) with
// dpkg-deb, which mmdebstrap needs anyway.
func buildInitrdPackage(ctx context.Context, tmp string) error {
	root := filepath.Join(tmp, "lab-initrd-pkg")
	if err := os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "DEBIAN", "control"), []byte(debianInitrdPackage), 0o644); err != nil {
		return err
	}
	// 0755 all the way: in --mode=unshare apt reads it as a mapped user.
	if err := os.Chmod(root, 0o755); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "dpkg-deb", "--root-owner-group", "--build", root, filepath.Join(tmp, "lab-initrd.deb")).CombinedOutput()
	if err != nil {
		return fmt.Errorf("dpkg-deb --build lab-initrd: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return os.RemoveAll(root)
}

// makeRootDisk writes the installed tree (target: a directory or a tarball) as an
// ext4 file system into tmp/disk.raw, whose path it returns, and moves the files
// the customize hook copied out (kernel, initrd, dpkg status) into tmp.
func makeRootDisk(ctx context.Context, pr *progress.Progress, tmp, target string) (string, error) {
	pr.Line("writing the ext4 file system (mkfs.ext4 -d, %s)", debianDiskSize)
	raw := filepath.Join(tmp, "disk.raw")
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-L", "lab-root", "-d", target, raw, debianDiskSize).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mkfs.ext4 -d: %w: %s", err, strings.TrimSpace(string(out)))
	}
	os.RemoveAll(target)
	out := filepath.Join(tmp, "lab-out")
	for _, n := range []string{"vmlinuz", "dpkg-status"} {
		if err := os.Rename(filepath.Join(out, n), filepath.Join(tmp, n)); err != nil {
			return "", fmt.Errorf("mmdebstrap's customize hook did not leave %s: %w", n, err)
		}
	}
	return raw, nil
}

// installDebianKernel makes tmp/vmlinux from Debian's vmlinuz, because qboot boots
// an uncompressed kernel through its PVH note faster; without the note it keeps
// the compressed kernel under that name. It reports whether the note is there.
func installDebianKernel(ctx context.Context, pr *progress.Progress, tmp string) (bool, error) {
	pr.Line("extracting vmlinux (booted directly with qboot)")
	vmlinux := filepath.Join(tmp, "vmlinux")
	if err := extractVmlinux(ctx, filepath.Join(tmp, "vmlinuz"), vmlinux); err != nil {
		return false, fmt.Errorf("extracting vmlinux: %w", err)
	}
	return pvhOrCompressed(pr, vmlinux, filepath.Join(tmp, "vmlinuz"), "the Debian kernel", os.Rename)
}

// convertDisk converts the raw root disk to qcow2, which holds only the blocks in
// use and can back the machines' overlays.
func convertDisk(ctx context.Context, pr *progress.Progress, raw, qcow2 string) error {
	bar := pr.Bar("converting the disk to qcow2", 0, "")
	cmd := exec.CommandContext(ctx, "qemu-img", "convert", "-O", "qcow2", raw, qcow2)
	cout, err := cmd.CombinedOutput()
	bar.Finish()
	if err != nil {
		return fmt.Errorf("qemu-img convert: %w: %s", err, strings.TrimSpace(string(cout)))
	}
	return nil
}

// writeDebianImage writes the manifest (the installed packages from the image's
// dpkg status), drops the build's intermediate files from tmp and renames it to
// dir, so that the cache never holds a half-built image under its key.
func writeDebianImage(ctx context.Context, pr *progress.Progress, tmp, dir, cache, key string, pvh bool, start time.Time) (*Image, error) {
	status, err := os.ReadFile(filepath.Join(tmp, "dpkg-status"))
	if err != nil {
		return nil, err
	}
	pkgs, kver := installedPackages(status)
	st, err := os.Stat(filepath.Join(tmp, "disk.qcow2"))
	if err != nil {
		return nil, err
	}
	m := Manifest{
		Recipe: debianRecipe, Key: key, Distro: DistroDebian, SSHServer: OpenSSH,
		KernelVersion: kver, KernelOrigin: "package linux-image-" + kver + " (in the image)", KernelPVH: pvh,
		Cmdline: DebianCmdline, Packages: pkgs, DiskSize: st.Size(),
	}
	// The image has no initrd of Debian's own (no initramfs-tools): lab's is part of it.
	if err := ensureDebianInitrd(ctx, tmp, cache, m, pr); err != nil {
		return nil, fmt.Errorf("the Debian image's initrd: %w", err)
	}
	m.Built, m.BuildSeconds = time.Now().UTC().Truncate(time.Second), time.Since(start).Seconds()
	if err := writeManifest(tmp, m); err != nil {
		return nil, err
	}
	for _, n := range []string{"disk.raw", "vmlinuz", "dpkg-status", "files", "lab-out", "sources.list", "lab-initrd.deb"} {
		os.RemoveAll(filepath.Join(tmp, n))
	}
	if err := replaceDir(tmp, dir); err != nil {
		return nil, err
	}
	pr.Line("built %s (Debian 12, %d packages, disk %.0f MB, kernel %s) in %.0fs", dir, len(pkgs), float64(st.Size())/1e6, kver, m.BuildSeconds)
	img, err := loadDebian(dir)
	if err != nil {
		return nil, err
	}
	return withInitrd(ctx, img, cache, pr), nil
}

// mke2fsReadsTar reports whether mke2fs -d can read a tarball (e2fsprogs 1.47 with
// libarchive, which it loads at run time).
func mke2fsReadsTar() bool {
	for _, dir := range []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"} {
		if _, err := os.Stat(filepath.Join(dir, "libarchive.so.13")); err == nil {
			return true
		}
	}
	return false
}

// errSourcesUnreachable marks a build that failed because apt could not fetch
// from the host's sources.
var errSourcesUnreachable = errors.New("cannot reach this host's package sources")

// runMmdebstrap runs mmdebstrap, showing its phases ("I: ...") as progress lines.
func runMmdebstrap(ctx context.Context, pr *progress.Progress, args []string) error {
	cmd := exec.CommandContext(ctx, "mmdebstrap", args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("mmdebstrap: %w", err)
	}
	start := time.Now()
	var tail []string
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		tail = append(tail, l)
		if len(tail) > 15 {
			tail = tail[1:]
		}
		if strings.HasPrefix(l, "I: ") && !strings.HasPrefix(l, "I: using ") {
			msg := strings.TrimPrefix(l, "I: ")
			if len(msg) > 100 {
				msg = msg[:100] + "..."
			}
			pr.Line("  %5.0fs %s", time.Since(start).Seconds(), msg)
		}
	}
	io.Copy(io.Discard, stderr)
	if err := cmd.Wait(); err != nil {
		msg := strings.Join(tail, "\n")
		for _, s := range []string{"Could not resolve", "Failed to fetch", "Temporary failure resolving", "Could not connect", "Connection failed", "Unable to connect"} {
			if strings.Contains(msg, s) {
				return fmt.Errorf("mmdebstrap: %w (the Debian image is downloaded from them; check the network or the host's apt proxy settings): %s", errSourcesUnreachable, msg)
			}
		}
		return fmt.Errorf("mmdebstrap: %w:\n%s", err, msg)
	}
	return nil
}

// installedPackages lists the installed packages of a dpkg status file, and the
// version of the linux-image-VERSION package among them.
func installedPackages(status []byte) ([]Package, string) {
	var pkgs []Package
	kver := ""
	for _, st := range parseControl(status) {
		if !strings.HasSuffix(st["Status"], " installed") {
			continue
		}
		p := Package{Name: st["Package"], Version: st["Version"], Arch: st["Architecture"]}
		pkgs = append(pkgs, p)
		if v, ok := strings.CutPrefix(p.Name, "linux-image-"); ok && v != "amd64" {
			kver = v
		}
	}
	sort.Slice(pkgs, func(i, j int) bool { return pkgs[i].Name < pkgs[j].Name })
	return pkgs, kver
}

// loadDebian reads a complete Debian image dir.
func loadDebian(dir string) (*Image, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	if m.Distro != DistroDebian {
		return nil, fmt.Errorf("%s: not a Debian image", dir)
	}
	img := &Image{
		Dir: dir, Distro: DistroDebian, Kernel: filepath.Join(dir, "vmlinux"), KernelVersion: m.KernelVersion,
		Initrd: filepath.Join(dir, "lab-initrd.cpio"), Disk: filepath.Join(dir, "disk.qcow2"), Manifest: m,
		// systemd says on the console which unit failed (quiet hides the rest), so a
		// failed boot's console tail names it.
		Cmdline: m.Cmdline + " " + debianStatusWord,
	}
	if p := filepath.Join(dir, "initrd.img"); !fileExists(img.Initrd) && fileExists(p) {
		img.Initrd = p // an image of recipe debian-2 (initramfs-tools) whose lab initrd is missing
	}
	if err := allExist(img.Kernel, img.Initrd, img.Disk); err != nil {
		return nil, err
	}
	return img, nil
}

// loadCurrentDebian is loadDebian for an image whose initrd is up to date
// (debianInitrdCurrent), so that using it writes nothing into its dir.
func loadCurrentDebian(dir string) (*Image, error) {
	img, err := loadDebian(dir)
	if err == nil && !debianInitrdCurrent(img) {
		return nil, fmt.Errorf("%s: its initrd is not current", dir)
	}
	return img, err
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// withInitrd makes sure img has lab's initrd (see ensureDebianInitrd) for this
// recipe. When it cannot be rebuilt (offline, no busybox) the image's existing
// initrd is booted with a warning.
func withInitrd(ctx context.Context, img *Image, cache string, pr *progress.Progress) *Image {
	if err := ensureDebianInitrd(ctx, img.Dir, cache, img.Manifest, pr); err != nil {
		pr.Line("warning: booting the image's existing initrd %s: the current one could not be built: %v", img.Initrd, err)
		return img
	}
	if again, err := loadDebian(img.Dir); err == nil {
		return again
	}
	return img
}

// newestDebian is the most recently built Debian image in the cache.
func newestDebian(cache string) (*Image, bool) {
	return newest(cache, "debian-*", loadDebian, func(*Image) bool { return true })
}
