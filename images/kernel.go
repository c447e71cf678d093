package images

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"lab/internal/fsutil"
)

// kernelSource is where the kernel and its modules come from.
type kernelSource struct {
	Version    string // uname -r of the kernel
	Image      string // vmlinuz (bzImage) or vmlinux
	ModulesDir string // /lib/modules/VERSION
	Origin     string // for the manifest: package, flags or host
}

// unpackKernelDeb extracts boot/ and lib/modules/ of a linux-image package
// into dir (once: a complete extraction leaves a marker file).
// onImage, if not nil, gets the bytes of boot/vmlinuz-* as soon as they
// are read, so vmlinux can be extracted while the modules are unpacked.
func unpackKernelDeb(ctx context.Context, deb, dir string, progress func(int64), onImage func([]byte)) (*kernelSource, error) {
	marker := filepath.Join(dir, ".complete")
	if _, err := os.Stat(marker); err != nil {
		tmp := dir + ".tmp"
		if err := os.RemoveAll(tmp); err != nil {
			return nil, err
		}
		err := walkDeb(ctx, deb, progress, func(h *tar.Header, r io.Reader) error {
			name := filepath.Clean(strings.TrimPrefix(h.Name, "./"))
			if !strings.HasPrefix(name, "boot/") && !strings.HasPrefix(name, "lib/modules/") {
				return nil
			}
			p := filepath.Join(tmp, name)
			switch h.Typeflag {
			case tar.TypeDir:
				return os.MkdirAll(p, 0o755)
			case tar.TypeReg:
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					return err
				}
				if onImage != nil && strings.HasPrefix(name, "boot/vmlinuz-") {
					data, err := io.ReadAll(r)
					if err != nil {
						return err
					}
					onImage(data)
					r = bytes.NewReader(data)
				}
				f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
				if err != nil {
					return err
				}
				if _, err := io.Copy(f, r); err != nil {
					f.Close()
					return err
				}
				return f.Close()
			}
			// Links are skipped: the image needs none from this package,
			// and a link could point a later file outside dir.
			return nil
		})
		if err != nil {
			os.RemoveAll(tmp)
			return nil, err
		}
		os.RemoveAll(dir)
		if err := os.Rename(tmp, dir); err != nil {
			return nil, err
		}
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			return nil, err
		}
	}
	mods, err := filepath.Glob(filepath.Join(dir, "lib/modules/*"))
	if err != nil || len(mods) != 1 {
		return nil, fmt.Errorf("%s: expected one lib/modules/VERSION directory, found %d", deb, len(mods))
	}
	ver := filepath.Base(mods[0])
	img := filepath.Join(dir, "boot", "vmlinuz-"+ver)
	if _, err := os.Stat(img); err != nil {
		return nil, fmt.Errorf("%s: no boot/vmlinuz-%s", deb, ver)
	}
	return &kernelSource{Version: ver, Image: img, ModulesDir: mods[0]}, nil
}

// bzImageVersion reads the version string a bzImage carries in its setup
// header ("6.1.0-56-amd64 (debian-kernel@...) #1 SMP ..."), first word.
func bzImageVersion(data []byte) (string, bool) {
	if len(data) < 0x210 || string(data[0x202:0x206]) != "HdrS" {
		return "", false
	}
	off := int(binary.LittleEndian.Uint16(data[0x20e:])) + 0x200
	if off <= 0x200 || off >= len(data) {
		return "", false
	}
	s := data[off:]
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	f := strings.Fields(string(s))
	if len(f) == 0 {
		return "", false
	}
	return f[0], true
}

// compressions are the payload formats of a bzImage, by magic.
var compressions = []struct {
	magic []byte
	name  string
}{
	{[]byte("\xfd7zXZ\x00"), "payload.xz"},
	{[]byte("\x28\xb5\x2f\xfd"), "payload.zst"},
	{[]byte("\x1f\x8b\x08"), "payload.gz"},
}

// extractVmlinux writes the uncompressed ELF kernel of a bzImage (or copies
// a kernel that already is ELF) to out. The ELF kernel boots through its
// PVH entry without the bzImage's own decompression, which takes seconds
// under TCG.
func extractVmlinux(ctx context.Context, image, out string) error {
	data, err := os.ReadFile(image)
	if err != nil {
		return err
	}
	if err := extractVmlinuxData(ctx, data, out); err != nil {
		return fmt.Errorf("extracting vmlinux from %s: %w", image, err)
	}
	return nil
}

func extractVmlinuxData(ctx context.Context, data []byte, out string) error {
	if bytes.HasPrefix(data, []byte(elf.ELFMAG)) {
		return fsutil.WriteFile(out, data, 0o644)
	}
	payload := data
	if len(data) > 0x250 && string(data[0x202:0x206]) == "HdrS" {
		setup := int(data[0x1f1])
		if setup == 0 {
			setup = 4
		}
		start := (setup + 1) * 512
		off := int(binary.LittleEndian.Uint32(data[0x248:]))
		n := int(binary.LittleEndian.Uint32(data[0x24c:]))
		if start+off+n <= len(data) && n > 0 {
			payload = data[start+off : start+off+n]
		}
	}
	var firstErr error
	for _, c := range compressions {
		i := bytes.Index(payload, c.magic)
		if i < 0 {
			continue
		}
		r, wait, err := decompress(ctx, c.name, bytes.NewReader(payload[i:]))
		if err != nil {
			firstErr = err
			continue
		}
		vmlinux, err := io.ReadAll(r)
		werr := wait()
		if len(vmlinux) > 4 && bytes.HasPrefix(vmlinux, []byte(elf.ELFMAG)) {
			return fsutil.WriteFile(out, vmlinux, 0o644)
		}
		if firstErr == nil {
			firstErr = errors.Join(err, werr, fmt.Errorf("%s payload is not an ELF kernel", c.name))
		}
	}
	if firstErr == nil {
		firstErr = errors.New("no xz, zstd or gzip payload found")
	}
	return firstErr
}

// hasPVHNote reports whether an ELF kernel has the Xen PHYS32_ENTRY note
// (type 18) that QEMU needs to boot it directly.
func hasPVHNote(vmlinux string) (bool, error) {
	f, err := elf.Open(vmlinux)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b, err := io.ReadAll(p.Open())
		if err != nil {
			return false, err
		}
		for len(b) >= 12 {
			nsz := int(f.ByteOrder.Uint32(b[0:]))
			dsz := int(f.ByteOrder.Uint32(b[4:]))
			typ := f.ByteOrder.Uint32(b[8:])
			b = b[12:]
			nEnd := (nsz + 3) &^ 3
			dEnd := (dsz + 3) &^ 3
			if nsz < 0 || dsz < 0 || nEnd+dEnd > len(b) {
				break
			}
			name := string(bytes.TrimRight(b[:nsz], "\x00"))
			if name == "Xen" && typ == 18 {
				return true, nil
			}
			b = b[nEnd+dEnd:]
		}
	}
	return false, nil
}

// kernelFromFlags checks --kernel/--modules. Without --modules it looks
// for /lib/modules/VERSION of the kernel's own version.
func kernelFromFlags(kernel, modules string) (*kernelSource, error) {
	data, err := os.ReadFile(kernel)
	if err != nil {
		return nil, fmt.Errorf("--kernel: %w", err)
	}
	ver, _ := bzImageVersion(data)
	if modules == "" {
		if ver == "" {
			return nil, fmt.Errorf("--kernel %s: cannot tell its version: pass --modules /lib/modules/VERSION", kernel)
		}
		modules = filepath.Join("/lib/modules", ver)
		if _, err := os.Stat(modules); err != nil {
			return nil, fmt.Errorf("--kernel %s is version %s but %s does not exist: pass --modules DIR", kernel, ver, modules)
		}
	}
	if st, err := os.Stat(modules); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("--modules %s: not a directory", modules)
	}
	if ver == "" {
		ver = filepath.Base(modules)
	}
	return &kernelSource{Version: ver, Image: kernel, ModulesDir: modules, Origin: "--kernel " + kernel + " --modules " + modules}, nil
}

// hostKernel finds the host's own kernel when both /boot/vmlinuz-VERSION
// and /lib/modules/VERSION exist (and are readable).
func hostKernel() (*kernelSource, bool) {
	vs, _ := filepath.Glob("/boot/vmlinuz-*")
	for i := len(vs) - 1; i >= 0; i-- {
		ver := strings.TrimPrefix(filepath.Base(vs[i]), "vmlinuz-")
		mods := filepath.Join("/lib/modules", ver)
		if st, err := os.Stat(filepath.Join(mods, "kernel")); err != nil || !st.IsDir() {
			continue
		}
		if f, err := os.Open(vs[i]); err == nil {
			f.Close()
			return &kernelSource{Version: ver, Image: vs[i], ModulesDir: mods, Origin: "host " + vs[i]}, true
		}
	}
	return nil, false
}
