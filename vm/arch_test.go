package vm

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"lab/images"
)

// TestChooseAccelForeignArch: a guest of another architecture than the host's runs
// under TCG without a KVM trial (QEMU is never started: the binary does not exist).
func TestChooseAccelForeignArch(t *testing.T) {
	other := images.ARM64
	if runtime.GOARCH == images.ARM64 {
		other = images.AMD64
	}
	ctx := context.Background()
	dir := t.TempDir()
	accel, reason, err := chooseAccel(ctx, "/nonexistent/qemu", other, "auto", dir)
	want := "auto: an " + other + " guest on an " + runtime.GOARCH + " host runs under TCG"
	if err != nil || accel != "tcg" || reason != want {
		t.Errorf("auto = %q, %q, %v; want tcg, %q", accel, reason, err, want)
	}
	_, _, err = chooseAccel(ctx, "/nonexistent/qemu", other, "kvm", dir)
	wantErr := "vm: --accel kvm: KVM cannot run an " + other + " guest on an " + runtime.GOARCH + " host; use --accel tcg or auto, or --arch " + runtime.GOARCH
	if err == nil || err.Error() != wantErr {
		t.Errorf("kvm: %v; want %q", err, wantErr)
	}
	if _, err := os.Stat(filepath.Join(dir, "kvm-verdict.json")); err == nil {
		t.Error("a KVM verdict was cached for a foreign guest")
	}
}

func TestConfigArch(t *testing.T) {
	base := Config{StateDir: filepath.Join(t.TempDir(), "vm")}
	tests := []struct {
		name       string
		cfg        Config
		arch, qemu string
		err        string
	}{
		{"default", base, images.DefaultArch(), map[string]string{images.AMD64: "qemu-system-x86_64", images.ARM64: "qemu-system-aarch64"}[images.DefaultArch()], ""},
		{"arm64", with(base, func(c *Config) { c.Arch = "aarch64" }), images.ARM64, "qemu-system-aarch64", ""},
		{"amd64 with own qemu", with(base, func(c *Config) { c.Arch = "amd64"; c.QEMU = "/opt/q" }), images.AMD64, "/opt/q", ""},
		{"unknown", with(base, func(c *Config) { c.Arch = "mips" }), "", "", `vm: --arch: guest architecture "mips": want amd64 or arm64`},
		{"image decides", with(base, func(c *Config) { c.Image = &images.Image{Manifest: images.Manifest{Arch: images.ARM64}} }), images.ARM64, "qemu-system-aarch64", ""},
		{"image disagrees", with(base, func(c *Config) {
			c.Arch = images.AMD64
			c.Image = &images.Image{Manifest: images.Manifest{Arch: images.ARM64}}
		}), "", "", "vm: --arch amd64 but the given image is arm64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.cfg.withDefaults()
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || err.Error() != tt.err {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || c.Arch != tt.arch || c.QEMU != tt.qemu {
				t.Errorf("arch %q, qemu %q, %v; want %q, %q", c.Arch, c.QEMU, err, tt.arch, tt.qemu)
			}
		})
	}
}

func with(c Config, f func(*Config)) Config { f(&c); return c }
