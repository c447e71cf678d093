package images

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"lab/internal/fsutil"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Guest architectures (Go's GOARCH spelling, which is also Debian's for these two).
const (
	AMD64 = "amd64"
	ARM64 = "arm64"
)

// DefaultArch is the guest architecture when none is asked for: the host's own, so
// that KVM can run it (an arm64 laptop or CI runner gets an arm64 guest).
func DefaultArch() string {
	if runtime.GOARCH == ARM64 {
		return ARM64
	}
	return AMD64
}

// Arches lists the guest architectures lab builds images for.
var Arches = []string{AMD64, ARM64}

// archSpec is what differs between guest architectures.
type archSpec struct {
	name       string // GOARCH and Debian architecture
	kernelMeta string // the package apt installs for "the current kernel"
	cmdline    string
	modules    []string // kernel modules to load, dependencies are added
	kernelFile string   // the kernel's file name in the image dir
	// extractKernel writes the bootable uncompressed kernel made from the
	// package's boot/vmlinuz-* to out.
	extractKernel func(ctx context.Context, data []byte, out string) error
	qemuUser      string // qemu-user emulator that runs the arch's ELF files on another host
}

// DefaultCmdlineARM64 is the arm64 guest's kernel command line: the virt machine's
// console is the PL011 UART (ttyAMA0); the x86-only timer words are left out.
const DefaultCmdlineARM64 = "console=ttyAMA0 quiet panic=-1 cryptomgr.notests=1 mitigations=off"

var archSpecs = map[string]*archSpec{
	AMD64: {
		name: AMD64, kernelMeta: "linux-image-amd64", cmdline: DefaultCmdline,
		modules: moduleRoots, kernelFile: "vmlinux", extractKernel: extractVmlinuxData,
		qemuUser: "qemu-x86_64",
	},
	ARM64: {
		name: ARM64, kernelMeta: "linux-image-arm64", cmdline: DefaultCmdlineARM64,
		// QEMU's virt machine reports system_powerdown as a GPIO key (PL061,
		// built in) when it boots from a device tree: gpio_keys plus evdev let
		// acpid see it as the power button.
		modules:    append(append([]string(nil), moduleRoots...), "gpio_keys"),
		kernelFile: "Image", extractKernel: extractARM64Image,
		qemuUser: "qemu-aarch64",
	},
}

// archOf returns the spec of a guest architecture ("" is DefaultArch), accepting the
// uname -m spellings too.
func archOf(arch string) (*archSpec, error) {
	switch arch {
	case "":
		arch = DefaultArch()
	case "x86_64", "x86-64":
		arch = AMD64
	case "aarch64":
		arch = ARM64
	}
	if s, ok := archSpecs[arch]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("guest architecture %q: want %s", arch, strings.Join(Arches, " or "))
}

// NormalizeArch returns the GOARCH spelling of a guest architecture ("" is
// DefaultArch; x86_64 and aarch64 are accepted), or an error naming the choices.
func NormalizeArch(arch string) (string, error) {
	s, err := archOf(arch)
	if err != nil {
		return "", err
	}
	return s.name, nil
}

// foreign reports whether the guest's packages are not the host's own architecture.
func (s *archSpec) foreign() bool { return s.name != runtime.GOARCH }

// arm64Magic is the "ARM\x64" magic at offset 0x38 of an arm64 kernel Image.
var arm64Magic = []byte("ARM\x64")

func isARM64Image(data []byte) bool {
	return len(data) >= 0x40 && bytes.Equal(data[0x38:0x3c], arm64Magic)
}

// extractARM64Image writes the uncompressed arm64 Image QEMU boots with -kernel.
// Debian 12's arm64 vmlinuz already is one; a gzip-compressed Image is decompressed
// at build time (QEMU would do it at every boot).
func extractARM64Image(_ context.Context, data []byte, out string) error {
	if isARM64Image(data) {
		return fsutil.WriteFile(out, data, 0o644)
	}
	if bytes.HasPrefix(data, []byte("\x1f\x8b\x08")) {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return err
		}
		img, err := io.ReadAll(zr)
		if err != nil {
			return fmt.Errorf("gunzip: %w", err)
		}
		if isARM64Image(img) {
			return fsutil.WriteFile(out, img, 0o644)
		}
	}
	if len(data) >= 8 && string(data[4:8]) == "zimg" {
		return errors.New("an EFI zboot kernel (needs UEFI firmware): pass --kernel with an uncompressed arm64 Image")
	}
	return errors.New("not an arm64 kernel Image (no ARM\\x64 magic), plain or gzip-compressed")
}

// foreignApt points apt at a private state of its own under cache/apt-ARCH for a
// guest architecture that is not the host's: the host's sources and keys, but its
// own package lists (fetched with apt-get update, no root needed), an empty dpkg
// status and its own binary cache. The host's apt state is never touched.
func foreignApt(ctx context.Context, a *apt, cache string) error {
	s := a.arch
	dir := filepath.Join(cache, "apt-"+s.name)
	lists := filepath.Join(dir, "lists")
	status := filepath.Join(dir, "status")
	for _, d := range []string{filepath.Join(lists, "partial"), filepath.Join(dir, "cache")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if _, err := os.Stat(status); err != nil {
		if err := os.WriteFile(status, nil, 0o644); err != nil {
			return err
		}
	}
	a.opts = []string{
		"-o", "APT::Architecture=" + s.name,
		"-o", "APT::Architectures::=" + s.name,
		"-o", "Dir::State::lists=" + lists,
		"-o", "Dir::State::status=" + status,
		"-o", "Dir::Cache=" + filepath.Join(dir, "cache"),
		// Only the Packages indices: no AppStream metadata, no translations.
		"-o", "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
		"-o", "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false",
		"-o", "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false",
		"-o", "Acquire::Languages=none",
	}
	stale, why := foreignListsStale(lists)
	if !stale {
		return nil
	}
	a.progress.Line("fetching the %s package lists from this host's apt sources (%s)", s.name, why)
	args := append(append([]string(nil), a.opts...), "update", "-q")
	if os.Geteuid() == 0 {
		args = append(args, "-o", "APT::Sandbox::User=root")
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, "apt-get", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("apt-get update for %s: %w: %s", s.name, err, lastLines(out, 3))
	}
	if bad := foreignUpdateErrors(out); bad != "" {
		return fmt.Errorf("apt-get update for %s: %s (check that the host's apt sources serve %s)", s.name, bad, s.name)
	}
	a.progress.Line("fetched the %s package lists in %.1fs", s.name, time.Since(start).Seconds())
	return nil
}

// foreignListsStale says whether the private lists need an apt-get update: when
// they are empty, or older than the host's own lists (the host ran apt-get update
// since: follow it, so that both architectures come from the same archive state).
func foreignListsStale(lists string) (bool, string) {
	newest := func(dir string) time.Time {
		var t time.Time
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if st, err := e.Info(); err == nil && st.Mode().IsRegular() && strings.Contains(e.Name(), "Packages") && st.ModTime().After(t) {
				t = st.ModTime()
			}
		}
		return t
	}
	ours := newest(lists)
	if ours.IsZero() {
		return true, "first use"
	}
	if host := newest("/var/lib/apt/lists"); host.After(ours) {
		return true, "the host's lists are newer"
	}
	return false, ""
}

// foreignUpdateErrors returns apt-get update's "E:"/"W: Failed" lines (it exits 0
// when a source fails).
func foreignUpdateErrors(out []byte) string {
	var bad []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "E: ") || strings.HasPrefix(l, "Err:") {
			bad = append(bad, strings.TrimSpace(l))
		}
	}
	if len(bad) > 3 {
		bad = bad[:3]
	}
	return strings.Join(bad, "; ")
}

// runCommand runs an ELF file of the guest's architecture on the host: directly
// when it is the host's, else through qemu-user (qemu-ARCH or qemu-ARCH-static in
// PATH). ok is false when there is no way to run it.
func (s *archSpec) runCommand(bin string, args ...string) (*exec.Cmd, bool) {
	if !s.foreign() {
		return exec.Command(bin, args...), true
	}
	for _, q := range []string{s.qemuUser + "-static", s.qemuUser} {
		if p, err := exec.LookPath(q); err == nil {
			return exec.Command(p, append([]string{bin}, args...)...), true
		}
	}
	return nil, false
}
