// Package qemu builds qemu-system-x86_64 (and, WithArch("arm64"), qemu-system-aarch64) command lines from composable options, in
// the manner of hugelgupf/vmtest's qemu package: every knob is an Fn that validates
// its input and records what it needs in Options; Command renders the argv in a
// fixed order, so the same option set always yields the same command line (the
// golden tests rely on that). The package only builds argv; it never starts QEMU
// and never touches the file system.
package qemu

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// DefaultBinary is the QEMU system emulator used when Options.Binary is empty.
const DefaultBinary = "qemu-system-x86_64"

// BinaryARM64 is the system emulator of arm64 guests (Debian: qemu-system-arm).
const BinaryARM64 = "qemu-system-aarch64"

// TCGCPUARM64 is the arm64 CPU model under TCG: everything TCG emulates, with the
// QEMU-defined ("impdef") pointer-authentication algorithm instead of the
// architected QARMA, whose emulation dominates the run time of PAC-using code
// (Debian's kernel signs return addresses).
const TCGCPUARM64 = "max,pauth-impdef=on"

// QbootROM is where Debian's qemu-system-data installs qboot, the minimal firmware
// that jumps straight into a PVH kernel.
const QbootROM = "/usr/share/qemu/qboot.rom"

// IDAllocator hands out unique QEMU object ids ("net0", "fs0", "fs1", ...).
// TCGCPU is the CPU model under TCG: everything TCG emulates, minus ERMS and FSRM. With
// them the guest kernel copies memory with `rep movsb`, which TCG emulates byte by byte;
// without them vsock and pipe throughput in the guest is about 3x higher (measured with
// the vhostvsock benchmarks).
const TCGCPU = "max,-erms,-fsrm"

type IDAllocator struct{ next map[string]int }

// ID returns the next unused id with the given prefix.
func (a *IDAllocator) ID(prefix string) string {
	if a.next == nil {
		a.next = map[string]int{}
	}
	n := a.next[prefix]
	a.next[prefix] = n + 1
	return prefix + strconv.Itoa(n)
}

// Options is what the Fns fill in. The zero value plus no Fns is a valid (if useless)
// machine: q35, TCG, QEMU's default memory.
type Options struct {
	Binary       string   // zero: DefaultBinary (arm64: BinaryARM64)
	Arch         string   // guest architecture, "amd64" or "arm64" (WithArch); zero: amd64
	Machine      string   // zero: "q35" (arm64: "virt")
	MachineProps []string // extra ",k=v" properties of -machine
	Accel        string   // "kvm" or "tcg"; zero: tcg
	CPU          string   // zero: "host" under kvm, TCGCPU (arm64: TCGCPUARM64) under tcg
	SMP          int      // zero: QEMU's default (1)
	MemoryMiB    int      // zero: QEMU's default (128)
	// SharedMemory backs guest RAM with a memfd shared with other processes
	// (vhost-user back-ends map it). It needs MemoryMiB, since the backend's size must equal -m.
	SharedMemory bool
	BIOS         string   // firmware (-bios); zero: QEMU's default (SeaBIOS)
	Kernel       string   // -kernel
	Initrd       string   // -initrd
	Append       []string // kernel command line words, joined with spaces
	Args         []string // devices and everything else, in the order the Fns added them
}

// Fn is one composable option.
type Fn func(*IDAllocator, *Options) error

// ErrInvalid is wrapped by every validation error of this package.
var ErrInvalid = errors.New("invalid option")

func invalid(format string, args ...any) error {
	return fmt.Errorf("qemu: %w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Command applies fns in order and returns the full argv (argv[0] is the binary).
func Command(fns ...Fn) ([]string, error) {
	var ids IDAllocator
	var o Options
	for _, fn := range fns {
		if fn == nil {
			continue
		}
		if err := fn(&ids, &o); err != nil {
			return nil, err
		}
	}
	return o.argv()
}

func (o *Options) argv() ([]string, error) {
	arm := o.Arch == "arm64"
	bin := o.Binary
	if bin == "" {
		bin = DefaultBinary
		if arm {
			bin = BinaryARM64
		}
	}
	accel := o.Accel
	if accel == "" {
		accel = "tcg"
	}
	cpu := o.CPU
	if cpu == "" {
		cpu = TCGCPU
		if arm {
			cpu = TCGCPUARM64
		}
		if accel == "kvm" {
			cpu = "host"
		}
	}
	machine := o.Machine
	if machine == "" {
		machine = "q35"
		if arm {
			machine = "virt"
		}
	}
	props := append([]string(nil), o.MachineProps...)
	if arm && machine == "virt" && accel == "kvm" {
		// Under KVM the interrupt controller must be one the host's GIC can
		// virtualise (GICv3 on most arm64 servers; the virt default is GICv2).
		props = append(props, "gic-version=max")
	}
	if o.SharedMemory {
		if o.MemoryMiB <= 0 {
			return nil, invalid("shared memory needs an explicit memory size (WithMemory)")
		}
		props = append(props, "memory-backend=mem")
	}
	a := []string{bin,
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-machine", strings.Join(append([]string{machine}, props...), ","),
		"-accel", accel,
		"-cpu", cpu,
	}
	if o.SMP > 0 {
		a = append(a, "-smp", strconv.Itoa(o.SMP))
	}
	if o.MemoryMiB > 0 {
		a = append(a, "-m", strconv.Itoa(o.MemoryMiB))
	}
	if o.SharedMemory {
		a = append(a, "-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", o.MemoryMiB))
	}
	if o.BIOS != "" {
		a = append(a, "-bios", o.BIOS)
	}
	if o.Kernel != "" {
		a = append(a, "-kernel", o.Kernel)
	}
	if o.Initrd != "" {
		if o.Kernel == "" {
			return nil, invalid("an initrd needs a kernel")
		}
		a = append(a, "-initrd", o.Initrd)
	}
	if len(o.Append) > 0 {
		if o.Kernel == "" {
			return nil, invalid("a kernel command line needs a kernel")
		}
		a = append(a, "-append", strings.Join(o.Append, " "))
	}
	return append(a, o.Args...), nil
}

// All composes several Fns into one.
func All(fns ...Fn) Fn {
	return func(ids *IDAllocator, o *Options) error {
		for _, fn := range fns {
			if fn == nil {
				continue
			}
			if err := fn(ids, o); err != nil {
				return err
			}
		}
		return nil
	}
}

// WithBinary selects the QEMU executable (a path or a name looked up in PATH).
func WithBinary(path string) Fn {
	return func(_ *IDAllocator, o *Options) error {
		if path == "" {
			return invalid("empty QEMU binary")
		}
		o.Binary = path
		return nil
	}
}

// WithArch selects the guest architecture: "amd64" (q35, qemu-system-x86_64) or
// "arm64" (the virt machine with qemu-system-aarch64). Its devices are the same
// virtio-pci ones: virt has a PCIe host bridge, which Debian's arm64 kernel drives
// with its built-in pci-host-generic.
func WithArch(arch string) Fn {
	return func(_ *IDAllocator, o *Options) error {
		switch arch {
		case "amd64", "arm64":
			o.Arch = arch
			return nil
		}
		return invalid("architecture %q (want amd64 or arm64)", arch)
	}
}

// WithAccel selects the accelerator: "kvm" or "tcg".
func WithAccel(accel string) Fn {
	return func(_ *IDAllocator, o *Options) error {
		switch accel {
		case "kvm", "tcg":
			o.Accel = accel
			return nil
		}
		return invalid("accelerator %q (want kvm or tcg)", accel)
	}
}

// WithCPU overrides the CPU model chosen from the accelerator.
func WithCPU(model string) Fn {
	return func(_ *IDAllocator, o *Options) error {
		if model == "" || strings.ContainsAny(model, " ") {
			return invalid("CPU model %q", model)
		}
		o.CPU = model
		return nil
	}
}

// WithSMP sets the number of virtual CPUs.
func WithSMP(n int) Fn {
	return func(_ *IDAllocator, o *Options) error {
		if n < 1 || n > 255 {
			return invalid("%d CPUs (want 1..255)", n)
		}
		o.SMP = n
		return nil
	}
}

// WithMemory sets guest RAM in MiB.
func WithMemory(mib int) Fn {
	return func(_ *IDAllocator, o *Options) error {
		if mib < 64 {
			return invalid("%d MiB of memory (want at least 64)", mib)
		}
		o.MemoryMiB = mib
		return nil
	}
}

// WithSharedMemory backs guest RAM with a shared memfd (needed by vhost-user devices).
func WithSharedMemory() Fn {
	return func(_ *IDAllocator, o *Options) error {
		o.SharedMemory = true
		return nil
	}
}

// WithBIOS selects the firmware, e.g. QbootROM for a PVH kernel.
func WithBIOS(path string) Fn {
	return func(_ *IDAllocator, o *Options) error {
		o.BIOS = path
		return nil
	}
}

// WithKernel boots a kernel directly (an uncompressed vmlinux with a PVH note boots
// fastest, with WithBIOS(QbootROM)).
func WithKernel(path string) Fn {
	return func(_ *IDAllocator, o *Options) error {
		if path == "" {
			return invalid("empty kernel path")
		}
		o.Kernel = path
		return nil
	}
}

// WithInitrd sets the initramfs.
func WithInitrd(path string) Fn {
	return func(_ *IDAllocator, o *Options) error {
		if path == "" {
			return invalid("empty initrd path")
		}
		o.Initrd = path
		return nil
	}
}

// WithAppend adds words to the kernel command line.
func WithAppend(words ...string) Fn {
	return func(_ *IDAllocator, o *Options) error {
		for _, w := range words {
			if w == "" || strings.ContainsAny(w, " \t\n") {
				return invalid("kernel command line word %q", w)
			}
		}
		o.Append = append(o.Append, words...)
		return nil
	}
}

// WithArgs appends raw arguments (an escape hatch; prefer a dedicated Fn).
func WithArgs(args ...string) Fn {
	return func(_ *IDAllocator, o *Options) error {
		o.Args = append(o.Args, args...)
		return nil
	}
}

// Forward is one TCP port forwarded from the host's loopback into the guest.
type Forward struct {
	HostPort, GuestPort int
}

// WithUserNet adds a virtio-net NIC on QEMU's user-mode network (slirp: the guest is
// 10.0.2.15, the host 10.0.2.2), with the given ports forwarded from 127.0.0.1.
func WithUserNet(fwds ...Forward) Fn {
	return func(ids *IDAllocator, o *Options) error {
		id := ids.ID("net")
		nd := "user,id=" + id
		for _, f := range fwds {
			if f.HostPort < 1 || f.HostPort > 65535 || f.GuestPort < 1 || f.GuestPort > 65535 {
				return invalid("port forward %d->%d", f.HostPort, f.GuestPort)
			}
			nd += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", f.HostPort, f.GuestPort)
		}
		o.Args = append(o.Args, "-netdev", nd, "-device", "virtio-net-pci,netdev="+id)
		return nil
	}
}

// WithShare exports a host directory over 9p (virtio-9p) under a mount tag. The guest
// mounts it with `mount -t 9p -o trans=virtio,version=9p2000.L TAG DIR`.
// security_model=none lets an unprivileged QEMU serve it (chown failures are ignored).
func WithShare(hostPath, tag string, readOnly bool) Fn {
	return func(ids *IDAllocator, o *Options) error {
		if hostPath == "" {
			return invalid("empty share path")
		}
		if !validTag(tag) {
			return invalid("9p mount tag %q (want 1-31 of [A-Za-z0-9_.-])", tag)
		}
		id := ids.ID("fs")
		fs := "local,id=" + id + ",path=" + escape(hostPath) + ",security_model=none"
		if readOnly {
			fs += ",readonly=on"
		}
		o.Args = append(o.Args, "-fsdev", fs, "-device", "virtio-9p-pci,fsdev="+id+",mount_tag="+tag)
		return nil
	}
}

func validTag(tag string) bool {
	if len(tag) == 0 || len(tag) > 31 {
		return false
	}
	for _, r := range tag {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-') {
			return false
		}
	}
	return true
}

// WithSerialFile sends the first serial port (the guest's console=ttyS0; on arm64's
// virt machine the PL011 UART, console=ttyAMA0) to a file.
func WithSerialFile(path string) Fn {
	return func(ids *IDAllocator, o *Options) error {
		if path == "" {
			return invalid("empty serial log path")
		}
		id := ids.ID("serial")
		o.Args = append(o.Args, "-chardev", "file,id="+id+",path="+escape(path), "-serial", "chardev:"+id)
		return nil
	}
}

// WithQMP adds a QMP monitor listening on a Unix socket (QEMU creates it; one client
// at a time). Several WithQMP give several independent monitors.
func WithQMP(socketPath string) Fn {
	return func(ids *IDAllocator, o *Options) error {
		if socketPath == "" {
			return invalid("empty QMP socket path")
		}
		id := ids.ID("qmp")
		o.Args = append(o.Args, "-chardev", "socket,id="+id+",path="+escape(socketPath)+",server=on,wait=off",
			"-mon", "chardev="+id+",mode=control")
		return nil
	}
}

// WithQMPListener adds a QMP monitor on a Unix socket the caller already listens on and
// passes to QEMU as fd (with exec.Cmd.ExtraFiles, entry i is fd 3+i). The caller creates
// the socket file, so it chooses its mode (QEMU would create it with the umask's).
func WithQMPListener(fd int) Fn {
	return func(ids *IDAllocator, o *Options) error {
		if fd < 3 {
			return invalid("QMP listener fd %d (want an inherited fd >= 3)", fd)
		}
		id := ids.ID("qmp")
		o.Args = append(o.Args, "-chardev", fmt.Sprintf("socket,id=%s,fd=%d,server=on,wait=off", id, fd),
			"-mon", "chardev="+id+",mode=control")
		return nil
	}
}

// WithRNG adds a virtio-rng device fed from the host's /dev/urandom.
func WithRNG() Fn {
	return func(ids *IDAllocator, o *Options) error {
		id := ids.ID("rng")
		o.Args = append(o.Args, "-object", "rng-random,id="+id+",filename=/dev/urandom", "-device", "virtio-rng-pci,rng="+id)
		return nil
	}
}

// WithKernelVsock adds the in-kernel vsock device (needs /dev/vhost-vsock on the host).
func WithKernelVsock(cid uint32) Fn {
	return func(_ *IDAllocator, o *Options) error {
		if cid < 3 {
			return invalid("guest CID %d (want >= 3)", cid)
		}
		o.Args = append(o.Args, "-device", fmt.Sprintf("vhost-vsock-pci,guest-cid=%d", cid))
		return nil
	}
}

// WithUserVsock adds a vhost-user vsock device served by a userspace backend that
// listens on socketPath (it must exist before QEMU starts; QEMU 7.2 never reconnects).
// It turns on shared memory, which vhost-user needs to map the virtqueues.
func WithUserVsock(socketPath string) Fn {
	return func(ids *IDAllocator, o *Options) error {
		if socketPath == "" {
			return invalid("empty vhost-user socket path")
		}
		id := ids.ID("vsock")
		o.SharedMemory = true
		o.Args = append(o.Args, "-chardev", "socket,id="+id+",path="+escape(socketPath),
			"-device", "vhost-user-vsock-pci,chardev="+id)
		return nil
	}
}

// escape doubles commas, QEMU's escape inside an option value.
func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }
