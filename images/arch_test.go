package images

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestArchOf(t *testing.T) {
	host := AMD64
	if runtime.GOARCH == ARM64 {
		host = ARM64
	}
	tests := []struct {
		in, want, err string
	}{
		{"", host, ""},
		{"amd64", AMD64, ""},
		{"x86_64", AMD64, ""},
		{"arm64", ARM64, ""},
		{"aarch64", ARM64, ""},
		{"riscv64", "", `guest architecture "riscv64": want amd64 or arm64`},
	}
	for _, tt := range tests {
		got, err := NormalizeArch(tt.in)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("NormalizeArch(%q) = %q, %v; want error %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("NormalizeArch(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// arm64Image is a fake arm64 kernel Image: a 64-byte header with the magic at 0x38.
func arm64Image(body string) []byte {
	b := make([]byte, 64)
	copy(b[0x38:], "ARM\x64")
	return append(b, body...)
}

func TestExtractARM64Image(t *testing.T) {
	img := arm64Image("kernel text")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(img)
	zw.Close()
	zboot := append([]byte("MZ\x00\x00zimg"), make([]byte, 64)...)
	tests := []struct {
		name string
		in   []byte
		want []byte
		err  string
	}{
		{"plain Image (Debian 12)", img, img, ""},
		{"gzip Image", gz.Bytes(), img, ""},
		{"EFI zboot", zboot, nil, "an EFI zboot kernel (needs UEFI firmware): pass --kernel with an uncompressed arm64 Image"},
		{"x86 bzImage", append(make([]byte, 0x202), "HdrS"...), nil, `not an arm64 kernel Image (no ARM\x64 magic), plain or gzip-compressed`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "Image")
			err := extractARM64Image(context.Background(), tt.in, out)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(out)
			if !bytes.Equal(got, tt.want) {
				t.Errorf("wrote %d bytes, want the %d-byte Image", len(got), len(tt.want))
			}
		})
	}
}

// TestCacheKeyArch: the architecture is part of the key, and amd64 keys are what they
// were before arm64 guests (CI caches saved under them stay valid).
func TestCacheKeyArch(t *testing.T) {
	rc, err := newRecipe(OpenSSH)
	if err != nil {
		t.Fatal(err)
	}
	pkgs := []Package{{Name: "busybox-static", Version: "1:1.35.0-4", Arch: "all", SHA256: "ab"}}
	key := func(arch string) string {
		spec := archSpecs[arch]
		r := *rc
		r.modules = spec.modules
		k, err := cacheKey(&r, spec, OpenSSH, pkgs, nil)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	// The amd64 key as computed before the architecture was a parameter.
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n%s\n%q\n", recipeVersion, OpenSSH, DefaultCmdline, rcS, rc.inittab, moduleRoots)
	for _, f := range rc.extra {
		fmt.Fprintf(h, "%s %v %s %x\n", f.Path, f.Mode, f.Linkname, sha256.Sum256(f.Data))
	}
	for _, p := range pkgs {
		fmt.Fprintf(h, "pkg %s %s %s %s\n", p.Name, p.Version, p.Arch, p.SHA256)
	}
	if old := hex.EncodeToString(h.Sum(nil))[:20]; key(AMD64) != old {
		t.Errorf("amd64 key = %s, want the pre-arm64 key %s", key(AMD64), old)
	}
	if key(ARM64) == key(AMD64) {
		t.Errorf("arm64 and amd64 images share the key %s", key(AMD64))
	}
}

// TestLoadImageArch: an arm64 image's kernel is its Image; a manifest without an arch
// (built before arm64 guests) is an amd64 image with vmlinux.
func TestLoadImageArch(t *testing.T) {
	for _, tt := range []struct{ arch, kernel, want string }{{"", "vmlinux", AMD64}, {ARM64, "Image", ARM64}} {
		dir := t.TempDir()
		b, _ := json.Marshal(Manifest{Arch: tt.arch, Cmdline: "x"})
		for name, data := range map[string][]byte{"manifest.json": b, tt.kernel: nil, "initrd.cpio": nil} {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		img, err := loadImage(dir)
		if err != nil {
			t.Fatalf("arch %q: %v", tt.arch, err)
		}
		if img.Kernel != filepath.Join(dir, tt.kernel) || img.Arch() != tt.want {
			t.Errorf("arch %q: kernel %s, Arch() %s; want %s, %s", tt.arch, img.Kernel, img.Arch(), tt.kernel, tt.want)
		}
	}
}

func TestForeignUpdateErrors(t *testing.T) {
	out := []byte("Hit:1 http://mirror/debian bookworm InRelease\nErr:2 http://mirror/debian bookworm-updates InRelease\n  Could not resolve 'mirror'\nW: Some index files failed to download. They have been ignored, or old ones used instead.\nE: Failed to fetch lists\n")
	want := "Err:2 http://mirror/debian bookworm-updates InRelease; E: Failed to fetch lists"
	if got := foreignUpdateErrors(out); got != want {
		t.Errorf("foreignUpdateErrors = %q, want %q", got, want)
	}
	if got := foreignUpdateErrors([]byte("Hit:1 x\nReading package lists...\n")); got != "" {
		t.Errorf("a clean update gave %q", got)
	}
}

// TestConsoleReady: only the image whose sshd logs to the console says when it listens.
func TestConsoleReady(t *testing.T) {
	tests := []struct {
		m    Manifest
		want string
	}{
		{Manifest{SSHServer: OpenSSH}, "Server listening on "},
		{Manifest{SSHServer: OpenSSH, Distro: DistroInitramfs}, "Server listening on "},
		{Manifest{SSHServer: Dropbear}, ""},
		{Manifest{SSHServer: OpenSSH, Distro: DistroDebian}, ""},
	}
	for _, tt := range tests {
		if got := tt.m.ConsoleReady(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.m, got, tt.want)
		}
	}
}
