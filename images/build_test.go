package images

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lab/internal/progress"
)

func TestBuildWithoutApt(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Build(context.Background(), Options{CacheDir: t.TempDir()})
	if err == nil {
		t.Fatal("no error without apt")
	}
	for _, want := range []string{"images: ", "apt-get", "Debian or Ubuntu host", "--kernel"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// Without apt, a cache that already holds an image (copied from another
// host) still serves it.
func TestBuildWithoutAptUsesCachedImage(t *testing.T) {
	cache := t.TempDir()
	dir := filepath.Join(cache, "images", "k1")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "vmlinux"), []byte("elf"), 0o644)
	os.WriteFile(filepath.Join(dir, "initrd.cpio"), []byte("cpio"), 0o644)
	os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(`{"key":"k1","ssh_server":"openssh","kernel_version":"6.1.0-56-amd64","cmdline":"console=ttyS0"}`), 0o644)
	t.Setenv("PATH", t.TempDir())
	var log strings.Builder
	img, err := Build(context.Background(), Options{CacheDir: cache, Progress: &log})
	if err != nil {
		t.Fatal(err)
	}
	if img.Dir != dir || img.KernelVersion != "6.1.0-56-amd64" || !strings.Contains(log.String(), "using the cached image") {
		t.Errorf("got %+v, progress %q", img, log.String())
	}
	// Another server's image does not count.
	if _, err := Build(context.Background(), Options{CacheDir: cache, SSHServer: Dropbear}); err == nil {
		t.Error("dropbear: served the openssh image")
	}
}

func TestBuildBadOptions(t *testing.T) {
	for _, opts := range []Options{
		{SSHServer: "telnetd"},
		{Modules: "/lib/modules/x"},
		{Kernel: "/nonexistent/vmlinuz"},
	} {
		opts.CacheDir = t.TempDir()
		if _, err := Build(context.Background(), opts); err == nil {
			t.Errorf("%+v: no error", opts)
		}
	}
}

// --kernel and --modules: the kernel package's own files, given by path,
// give an image with the same modules and a kernel that still boots by PVH.
func TestBuildKernelFlags(t *testing.T) {
	img, cache := realImage(t, DefaultSSHServer)
	kp, ok := kernelPackage(img.Manifest)
	if !ok {
		t.Skip("the image's kernel did not come from a package")
	}
	kdir := kernelPkgDir(cache, kp)
	vmlinuz := filepath.Join(kdir, "boot", "vmlinuz-"+img.KernelVersion)
	if _, err := os.Stat(vmlinuz); err != nil {
		t.Fatal(err)
	}
	// Without --modules the kernel's version names /lib/modules/VERSION,
	// which this host may not have.
	if _, err := os.Stat(filepath.Join("/lib/modules", img.KernelVersion)); err != nil {
		if _, err := kernelFromFlags(vmlinuz, ""); err == nil || !strings.Contains(err.Error(), "--modules") {
			t.Errorf("--kernel without modules: %v, want advice to pass --modules", err)
		}
	}
	// A separate cache holding only the .debs.
	own := t.TempDir()
	if err := os.MkdirAll(filepath.Join(own, "debs"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range img.Manifest.Packages {
		if p.Name == kp.Name {
			continue
		}
		if err := os.Link(filepath.Join(cache, "debs", p.debFile()), filepath.Join(own, "debs", p.debFile())); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Build(context.Background(), Options{CacheDir: own, Kernel: vmlinuz, Modules: filepath.Join(kdir, "lib/modules", img.KernelVersion)})
	if err != nil {
		t.Fatal(err)
	}
	if got.KernelVersion != img.KernelVersion || !got.Manifest.KernelPVH || !strings.HasPrefix(got.Manifest.KernelOrigin, "--kernel ") {
		t.Errorf("got version %s, PVH %v, origin %q", got.KernelVersion, got.Manifest.KernelPVH, got.Manifest.KernelOrigin)
	}
	if strings.Join(got.Manifest.Modules, " ") != strings.Join(img.Manifest.Modules, " ") {
		t.Errorf("modules %v, want %v", got.Manifest.Modules, img.Manifest.Modules)
	}
	for _, p := range got.Manifest.Packages {
		if strings.HasPrefix(p.Name, "linux-image-") {
			t.Errorf("kernel package %s used despite --kernel", p.Name)
		}
	}
	a, _ := os.ReadFile(got.Kernel)
	b, _ := os.ReadFile(img.Kernel)
	if len(a) == 0 || string(a) != string(b) {
		t.Errorf("vmlinux from --kernel differs from the package's (%d vs %d bytes)", len(a), len(b))
	}
	// Cached: the same call again does not rebuild.
	again, err := Build(context.Background(), Options{CacheDir: own, Kernel: vmlinuz, Modules: filepath.Join(kdir, "lib/modules", img.KernelVersion)})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Manifest.Built.Equal(got.Manifest.Built) || again.Manifest.Key != got.Manifest.Key {
		t.Errorf("second build was not served from the cache")
	}
}

// A build into an empty cache (only the big kernel .deb is linked in, to
// spare the archive 70 MB per run; apt-get downloads the rest) gives the
// same key and byte-identical files as the shared cache's build.
func TestIntegrationBuildCleanCache(t *testing.T) {
	img, cache := realImage(t, DefaultSSHServer)
	own := t.TempDir()
	if err := os.MkdirAll(filepath.Join(own, "debs"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range img.Manifest.Packages {
		if strings.HasPrefix(p.Name, "linux-image-") {
			if err := os.Link(filepath.Join(cache, "debs", p.debFile()), filepath.Join(own, "debs", p.debFile())); err != nil {
				t.Fatal(err)
			}
		}
	}
	var log strings.Builder
	got, err := Build(context.Background(), Options{CacheDir: own, Progress: &log})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("progress:\n%s", log.String())
	for _, want := range []string{"resolving packages", "downloading", "unpacking", "packing initramfs", "built "} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("progress lacks %q", want)
		}
	}
	if got.Manifest.Key != img.Manifest.Key {
		t.Fatalf("key %s, shared cache has %s", got.Manifest.Key, img.Manifest.Key)
	}
	for _, f := range []string{"initrd.cpio", "vmlinux"} {
		a, _ := os.ReadFile(filepath.Join(got.Dir, f))
		b, _ := os.ReadFile(filepath.Join(img.Dir, f))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s differs from the shared cache's (%d vs %d bytes): the build is not reproducible", f, len(a), len(b))
		}
	}
	if got.Manifest.SSHServer != OpenSSH || got.Manifest.InitrdSize == 0 || len(got.Manifest.Modules) == 0 {
		t.Errorf("manifest: %+v", got.Manifest)
	}
	// The manifest on disk is the one returned.
	again, err := loadImage(got.Dir)
	if err != nil || again.Manifest.Key != got.Manifest.Key || len(again.Manifest.Files) != len(got.Manifest.Files) {
		t.Errorf("manifest.json: %v", err)
	}
}

func TestKeyWithoutApt(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Key(context.Background(), Options{CacheDir: t.TempDir()})
	if err == nil || !strings.HasPrefix(err.Error(), "images: ") || !strings.HasSuffix(err.Error(), ": the image key comes from apt's package metadata") {
		t.Fatalf("Key without apt: %v", err)
	}
}

// The key is the cache directory Build uses, computed without building (on a host
// with apt; the image itself is built by the integration tests and lab image build).
func TestKeyIsBuildsKey(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: resolves packages with apt and builds (or reuses) the image")
	}
	if err := (&apt{progress: progress.New(nil)}).available(); err != nil {
		t.Skipf("no apt: %v", err)
	}
	ctx := context.Background()
	key, err := Key(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	img, err := Build(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if img.Manifest.Key != key || filepath.Base(img.Dir) != key {
		t.Errorf("Key = %s; Build used %s (%s)", key, img.Manifest.Key, img.Dir)
	}
}

// TestErrorsSayImagesOnce: an error out of the package's entry points carries the
// "images: " prefix once, however deep it arose (the cache dir, the cache's lock).
func TestErrorsSayImagesOnce(t *testing.T) {
	t.Setenv("HOME", "")
	t.Setenv("XDG_CACHE_HOME", "")
	gone := filepath.Join(t.TempDir(), "gone")
	badLink := []File{{Path: "/bin/sh", Mode: fs.ModeSymlink}}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"Build without a cache dir", func() error { _, err := Build(ctx, Options{}); return err },
			"images: no cache directory for lab: set XDG_CACHE_HOME or HOME: $HOME is not defined"},
		{"Key without a cache dir", func() error { _, err := Key(ctx, Options{}); return err },
			"images: no cache directory for lab: set XDG_CACHE_HOME or HOME: $HOME is not defined"},
		{"Remove from a missing cache", func() error { return Remove(ctx, gone, nil) },
			"images: lock " + gone + "/.lock: open " + gone + "/.lock: no such file or directory"},
		{"WriteCPIO of a bad entry", func() error { return WriteCPIO(io.Discard, badLink) },
			"images: cpio: /bin/sh: symlink without a target"},
		// What Build's initramfs step returns: Build adds the prefix.
		{"writeInitrd of a bad entry", func() error {
			_, err := writeInitrd(progress.New(nil), filepath.Join(t.TempDir(), "initrd.cpio"), badLink)
			return err
		}, "cpio: /bin/sh: symlink without a target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); err == nil || err.Error() != tc.want {
				t.Errorf("error %v\nwant  %s", err, tc.want)
			}
		})
	}
}
