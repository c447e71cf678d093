package images

import (
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

// SSH servers the image can carry.
const (
	Dropbear = "dropbear" // dropbear + OpenSSH's sftp-server
	OpenSSH  = "openssh"  // OpenSSH's sshd + sftp-server
)

// recipeVersion changes whenever the layout below changes in a way the
// cache key would not otherwise see.
const recipeVersion = "lab-initramfs-2"

// recipe is what goes into the image for one SSH server.
type recipe struct {
	server   string
	packages []string // userland packages (libraries are added by resolve)
	programs []string // guest paths of the programs to copy with their libraries
	modules  []string // kernel modules to load (their dependencies are added)
	inittab  string
	extra    []File // server-specific configuration
}

// moduleRoots are the kernel modules the boot contract promises:
// virtio-pci and virtio-net for eth0, virtio-rng, vsock over virtio,
// binfmt_misc, 9p over virtio, and the ACPI button with evdev so that
// acpid sees the power button (QMP system_powerdown).
var moduleRoots = []string{
	"virtio_pci", "virtio_net", "virtio_rng",
	"vmw_vsock_virtio_transport", "binfmt_misc",
	"9pnet_virtio", "9p", "button", "evdev",
}

const (
	dropbearKeyPath = "/etc/dropbear/dropbear_ed25519_host_key"
	opensshKeyPath  = "/etc/ssh/ssh_host_ed25519_key"
)

func newRecipe(server string) (*recipe, error) {
	r := &recipe{
		server: server,
		// bsdutils for script(1), which Debian's busybox-static lacks.
		packages: []string{"busybox-static", "openssh-sftp-server", "socat", "bsdutils"},
		programs: []string{"/bin/busybox", "/usr/lib/openssh/sftp-server", "/usr/bin/socat", "/usr/bin/script"},
		modules:  moduleRoots,
	}
	switch server {
	case Dropbear:
		r.packages = append(r.packages, "dropbear-bin")
		r.programs = append(r.programs, "/usr/sbin/dropbear")
		r.extra = []File{
			script("/usr/sbin/lab-sshd", `#!/bin/sh
# Started (and restarted) by init. The host key normally comes from the
# instance cpio (images.InstanceFiles); without one dropbear makes its own.
k=`+dropbearKeyPath+`
if [ -f "$k" ]; then exec /usr/sbin/dropbear -F -E -s -p 22 -r "$k"; fi
echo "lab: no $k: dropbear generates a host key (boot with an instance cpio to pin it)"
exec /usr/sbin/dropbear -F -E -s -p 22 -R
`),
			dir("/etc/dropbear", 0o755),
			// dropbear runs sftp-server from its compiled-in path.
			symlink("/usr/lib/sftp-server", "openssh/sftp-server"),
		}
	case OpenSSH:
		r.packages = append(r.packages, "openssh-server")
		r.programs = append(r.programs, "/usr/sbin/sshd")
		r.extra = []File{
			script("/usr/sbin/lab-sshd", `#!/bin/sh
# Started (and restarted) by init; the host key comes from the instance
# cpio (images.InstanceFiles).
k=`+opensshKeyPath+`
if [ ! -f "$k" ]; then echo "lab: no $k: boot with an instance cpio"; sleep 10; exit 1; fi
# -r: no re-exec per connection (re-exec re-randomises the address space
# of each connection's process; under TCG it costs about 0.3 s).
exec /usr/sbin/sshd -D -e -r
`),
			text("/etc/ssh/sshd_config", 0o644, `HostKey `+opensshKeyPath+`
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
# lab keeps one connection open and opens a session per command.
MaxSessions 100
MaxStartups 100
AcceptEnv LANG LC_* LABENV
Subsystem sftp /usr/lib/openssh/sftp-server
`),
			dir("/run/sshd", 0o755),
		}
	default:
		return nil, fmt.Errorf("unknown SSH server %q (want %q or %q)", server, Dropbear, OpenSSH)
	}
	r.inittab = `# busybox init
::sysinit:/etc/init.d/rcS
::respawn:/usr/sbin/lab-sshd
::respawn:/sbin/acpid -f -c /etc/acpi
::ctrlaltdel:/sbin/poweroff
::shutdown:/bin/sync
::shutdown:/bin/umount -a -r
`
	return r, nil
}

// rcS is run once by init before the SSH server starts. %s is the kernel
// version.
const rcS = `#!/bin/sh
# lab guest: system start (busybox init, sysinit). See docs/DESIGN.md.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
[ -e /bin/mount ] || /bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
while read -r m; do
	insmod "$m" || echo "lab: insmod $m failed"
done < /etc/lab/modules
mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
hostname -F /etc/hostname
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
for w in $(cat /proc/cmdline); do
	case "$w" in
	lab.mount=*:*)
		spec=${w#lab.mount=}
		tag=${spec%%:*}
		dir=${spec#*:}
		mkdir -p "$dir"
		mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 "$tag" "$dir" ||
			echo "lab: mounting 9p share $tag on $dir failed"
		;;
	esac
done
chmod 700 /root /root/.ssh 2>/dev/null
chmod 600 /root/.ssh/authorized_keys 2>/dev/null
for f in /etc/lab/rc.d/*; do
	[ -f "$f" ] && [ -x "$f" ] && "$f"
done
echo "lab: rcS done"
`

// baseFiles are the configuration files common to both servers.
func (r *recipe) baseFiles(kver string, modules []loadedModule) []File {
	var list strings.Builder
	for _, m := range modules {
		fmt.Fprintf(&list, "/lib/modules/%s/%s\n", kver, m.Path)
	}
	files := []File{
		dir("/dev", 0o755),
		{Path: "/dev/console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Major: 5, Minor: 1},
		{Path: "/dev/null", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o666, Major: 1, Minor: 3},
		dir("/proc", 0o555), dir("/sys", 0o555), dir("/run", 0o755), dir("/tmp", 0o777|fs.ModeSticky),
		dir("/mnt", 0o755), dir("/var", 0o755), dir("/var/log", 0o755), dir("/var/tmp", 0o777|fs.ModeSticky),
		symlink("/var/run", "../run"),
		dir("/root", 0o700), dir("/root/.ssh", 0o700),
		dir("/etc/lab/rc.d", 0o755),
		symlink("/init", "bin/busybox"),
		symlink("/bin/sh", "busybox"),
		text("/etc/inittab", 0o644, r.inittab),
		script("/etc/init.d/rcS", rcS),
		text("/etc/lab/modules", 0o644, list.String()),
		text("/etc/hostname", 0o644, "lab\n"),
		text("/etc/hosts", 0o644, "127.0.0.1 localhost\n127.0.1.1 lab\n"),
		text("/etc/resolv.conf", 0o644, "nameserver 10.0.2.3\n"),
		text("/etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
		text("/etc/group", 0o644, "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"),
		// '*' allows key logins; '!' would lock the account for OpenSSH.
		text("/etc/shadow", 0o600, "root:*:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n"),
		text("/etc/shells", 0o644, "/bin/sh\n/bin/ash\n"),
		text("/etc/nsswitch.conf", 0o644, "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"),
		text("/etc/profile", 0o644, "export PATH=/sbin:/usr/sbin:/bin:/usr/bin\n"),
		// busybox acpid runs /etc/acpi/PWRF/00000080 for the ACPI power
		// button, which QMP's system_powerdown presses.
		script("/etc/acpi/PWRF/00000080", "#!/bin/sh\nexec /sbin/poweroff\n"),
	}
	files = append(files, r.extra...)
	return files
}

// busyboxLinks returns symlinks for every applet (from `busybox --list-full`).
func busyboxLinks(list string) []File {
	var out []File
	for _, l := range strings.Fields(list) {
		p := "/" + strings.TrimPrefix(l, "/")
		if p == "/bin/busybox" || p == "/linuxrc" {
			continue
		}
		depth := strings.Count(strings.TrimPrefix(p, "/"), "/")
		out = append(out, symlink(p, strings.Repeat("../", depth)+"bin/busybox"))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func dir(p string, perm fs.FileMode) File { return File{Path: p, Mode: fs.ModeDir | perm} }
func symlink(p, target string) File {
	return File{Path: p, Mode: fs.ModeSymlink | 0o777, Linkname: target}
}
func text(p string, perm fs.FileMode, s string) File {
	return File{Path: p, Mode: perm, Data: []byte(s)}
}
func script(p, s string) File { return text(p, 0o755, s) }
