package vm

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"lab/images"
	"lab/share"
	"lab/vm/qemu"
)

// DefaultName is the VM name used when none is given.
const DefaultName = "default"

// Defaults for the guest.
const (
	DefaultMemoryMiB   = 1024
	DefaultCPUs        = 2
	DefaultBootTimeout = 2 * time.Minute
	// DefaultDiskBootTimeout is the Debian guest's: systemd, udev and the unit graph under
	// TCG took 1-2 min to SSH on a loaded 2-core host (one reboot of the Debian suite
	// missed 2 min), where the initramfs guest needs seconds.
	DefaultDiskBootTimeout = 6 * time.Minute
)

// Config describes a VM to boot. Every field documents its zero value.
type Config struct {
	Name     string // zero: "default"
	StateDir string // zero: $XDG_STATE_HOME/lab/<Name>
	CacheDir string // passed to images; zero: images' default ($XDG_CACHE_HOME/lab)
	Accel    string // "auto" (try KVM, fall back to TCG), "kvm" or "tcg"; zero: auto
	Vsock    string // "auto" (kernel when /dev/vhost-vsock opens, else user), "kernel" or "user"; zero: auto
	Shares   []Share
	// Scratch, when set, is where the guest mounts a writable share lab owns:
	// <state>/scratch (tag ScratchTag), made by Up and removed with the state dir by
	// Down. It is what lab run builds its fixtures in, so a VM needs no --share for
	// the scenarios. Zero: none.
	Scratch string
	// MemoryMiB and CPUs size the guest; zero: 1024 MiB and 2 CPUs.
	MemoryMiB, CPUs int
	// Kernel, when set, boots this kernel instead of the one from the host's package
	// sources (passed to images.Options.Kernel; Modules likewise).
	Kernel, Modules string
	// Image, when set, is used as is and no image is built (tests, callers that built one).
	Image *images.Image
	// Distro picks the image Up builds: images.DistroInitramfs or images.DistroDebian;
	// zero: the initramfs.
	Distro string
	// Disk is the machine's own writable disk (a qcow2 overlay over a disk image's base,
	// made by Up if missing, kept by Down), with machine.json beside it; required for a
	// disk image (Debian), unused by the initramfs. lab up puts it in the machine's
	// data dir ($XDG_DATA_HOME/lab/NAME/disk.qcow2).
	Disk string
	// Arch is the guest architecture, "amd64" or "arm64" (images.AMD64, images.ARM64);
	// zero: images.DefaultArch(), the host's. Another architecture than the host's
	// runs under TCG. With Image set, the image's own architecture is used.
	Arch string
	// QEMU is the emulator binary (path or name in PATH); zero: qemu-system-x86_64,
	// or qemu-system-aarch64 for an arm64 guest.
	QEMU string
	// Hostagent is the command that runs the supervisor, to which Up appends
	// "--state-dir DIR"; zero: this executable with the argument "hostagent" (right
	// for the lab binary; tests elsewhere build lab and point this at it).
	Hostagent []string
	// StateFiles are written into the state dir (name -> content, mode 0600) after Up
	// claims it and before the hostagent starts, so its tasks read them from the start
	// (a lab file's formats and environment policy for the relay). Names are plain file
	// names that are not lab's own. Zero: none.
	StateFiles map[string][]byte
	// BootFiles, when set, is called once the instance record is written (state dir,
	// shares with their tags, architecture) and returns files the guest gets in its
	// instance cpio, appended to the image's initrd (the initramfs guest's after its
	// keys): machine.Up seeds provisioning with it (provision.Seed; provision.SeedDisk
	// for a disk image, whose lab initrd copies /run/lab/seed onto the root's /run).
	// Zero: none (a disk image then boots the image's initrd as it is).
	BootFiles func(*Instance) ([]images.File, error)
	// BootTimeout bounds boot-to-SSH-ready; zero: DefaultBootTimeout, or
	// DefaultDiskBootTimeout for the Debian guest.
	BootTimeout time.Duration
	// Progress receives a progress line while the image builds and the VM boots; nil: silent.
	Progress io.Writer

	// inProcess, in tests, runs this hostagent inside the calling process.
	inProcess *Hostagent
}

// ScratchTag is the 9p tag of the scratch share (Config.Scratch).
const ScratchTag = "lab-scratch"

// DefaultScratch is where lab up mounts the scratch share.
const DefaultScratch = "/mnt/lab"

// Share is a host directory exported to the guest over 9p (lab's one share type).
type Share = share.Share

// ParseShare parses the --share syntax HOST:GUEST[:ro].
func ParseShare(s string) (Share, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return Share{}, fmt.Errorf("vm: share %q: want HOSTDIR:GUESTDIR[:ro]", s)
	}
	sh := Share{HostPath: parts[0], GuestPath: parts[1]}
	if len(parts) == 3 {
		if parts[2] != "ro" {
			return Share{}, fmt.Errorf("vm: share %q: the only option is ro", s)
		}
		sh.ReadOnly = true
	}
	return sh, nil
}

// withDefaults returns a copy of c with every zero field filled and the fields checked.
func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if err := validName(c.Name); err != nil {
		return c, err
	}
	if c.StateDir == "" {
		d, err := StateDirOf(c.Name)
		if err != nil {
			return c, err
		}
		c.StateDir = d
	} else {
		d, err := filepath.Abs(c.StateDir)
		if err != nil {
			return c, fmt.Errorf("vm: state dir: %w", err)
		}
		c.StateDir = d
	}
	if n := len(filepath.Join(c.StateDir, FileVhostSock)); n > maxUnixSockPath {
		return c, fmt.Errorf("vm: state dir %s is too long for Unix sockets (%d > %d bytes): set XDG_STATE_HOME to a shorter path", c.StateDir, n, maxUnixSockPath)
	}
	switch c.Accel {
	case "":
		c.Accel = "auto"
	case "auto", "kvm", "tcg":
	default:
		return c, fmt.Errorf("vm: --accel %q: want auto, kvm or tcg", c.Accel)
	}
	switch c.Vsock {
	case "":
		c.Vsock = "auto"
	case "auto", "kernel", "user":
	default:
		return c, fmt.Errorf("vm: --vsock %q: want auto, kernel or user", c.Vsock)
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = DefaultMemoryMiB
	}
	if c.CPUs == 0 {
		c.CPUs = DefaultCPUs
	}
	if c.MemoryMiB < 128 {
		return c, fmt.Errorf("vm: %d MiB of memory is too little (want at least 128)", c.MemoryMiB)
	}
	if c.CPUs < 1 {
		return c, fmt.Errorf("vm: %d CPUs: want at least 1", c.CPUs)
	}
	if c.Image != nil {
		if c.Arch != "" && c.Arch != c.Image.Arch() {
			return c, fmt.Errorf("vm: --arch %s but the given image is %s", c.Arch, c.Image.Arch())
		}
		c.Arch = c.Image.Arch()
	}
	arch, err := images.NormalizeArch(c.Arch)
	if err != nil {
		return c, fmt.Errorf("vm: --arch: %w", err)
	}
	c.Arch = arch
	if c.QEMU == "" {
		c.QEMU = qemu.DefaultBinary
		if c.Arch == images.ARM64 {
			c.QEMU = qemu.BinaryARM64
		}
	}
	if c.BootTimeout == 0 {
		c.BootTimeout = DefaultBootTimeout
		if c.Distro == images.DistroDebian || (c.Image != nil && c.Image.Distro == images.DistroDebian) {
			c.BootTimeout = DefaultDiskBootTimeout
		}
	}
	shares := share.Tagged(c.Shares)
	tags := map[string]bool{}
	for i, sh := range shares {
		if tags[sh.Tag] {
			return c, fmt.Errorf("vm: two shares with the tag %q", sh.Tag)
		}
		tags[sh.Tag] = true
		hp, err := filepath.Abs(sh.HostPath)
		if err != nil {
			return c, fmt.Errorf("vm: share %s: %w", sh.HostPath, err)
		}
		sh.HostPath = hp
		if !filepath.IsAbs(sh.GuestPath) || strings.ContainsAny(sh.GuestPath, " \t\n:") {
			return c, fmt.Errorf("vm: share guest path %q: want an absolute path without spaces or colons", sh.GuestPath)
		}
		shares[i] = sh
	}
	c.Shares = shares
	for name := range c.StateFiles {
		if name == "" || name != filepath.Base(name) || name[0] == '.' || isStateName(name) {
			return c, fmt.Errorf("vm: state file %q: want a plain file name that is not lab's own", name)
		}
	}
	if c.Scratch != "" {
		if !filepath.IsAbs(c.Scratch) || strings.ContainsAny(c.Scratch, " \t\n:") {
			return c, fmt.Errorf("vm: scratch share guest path %q: want an absolute path without spaces or colons", c.Scratch)
		}
		for _, sh := range shares {
			if sh.Tag == ScratchTag || filepath.Clean(sh.GuestPath) == filepath.Clean(c.Scratch) {
				return c, fmt.Errorf("vm: share %s:%s takes the scratch share's place (%s); mount it elsewhere", sh.HostPath, sh.GuestPath, c.Scratch)
			}
		}
	}
	return c, nil
}
