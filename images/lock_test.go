package images

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"lab/internal/fsutil"
	"lab/internal/progress"
)

// holdBuildLock holds cache's build lock for the test, as a long build (a Debian
// image takes many minutes) of another image would.
func holdBuildLock(t *testing.T, cache string) {
	t.Helper()
	l, err := fsutil.TryLock(filepath.Join(cache, ".lock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Unlock() })
}

func writeFakeImage(t *testing.T, dir string, m Manifest, files ...string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data := []byte(f)
		if f == "lab-initrd.key" {
			data = []byte(debianInitrdKey(m.Packages[0]))
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := json.Marshal(m)
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A build holding the cache's lock does not keep anyone from using an image that is
// in the cache already: the check takes no lock. Before, Build waited for the lock
// (here: until the context's end).
func TestCachedImageWithoutBuildLock(t *testing.T) {
	aptOK := (&apt{progress: progress.New(nil)}).available() == nil
	for _, tc := range []struct {
		name string
		// setup writes the cached image and returns its dir and the options that use it,
		// or skips.
		setup func(t *testing.T, cache string) (string, Options)
	}{
		{"initramfs without apt", func(t *testing.T, cache string) (string, Options) {
			t.Setenv("PATH", t.TempDir())
			dir := filepath.Join(cache, "images", "k1")
			writeFakeImage(t, dir, Manifest{Key: "k1", SSHServer: OpenSSH, KernelVersion: "6.1.0-56-amd64"}, "vmlinux", "initrd.cpio")
			// A build's work dir is never served.
			writeFakeImage(t, filepath.Join(cache, "images", "k2.tmp"), Manifest{Key: "k2", SSHServer: OpenSSH, Built: time.Now()}, "vmlinux", "initrd.cpio")
			return dir, Options{CacheDir: cache}
		}},
		{"initramfs", func(t *testing.T, cache string) (string, Options) {
			if testing.Short() || !aptOK {
				t.Skip("needs apt's metadata for the image's key (and not -short)")
			}
			key, err := Key(context.Background(), Options{CacheDir: cache})
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(cache, "images", key)
			writeFakeImage(t, dir, Manifest{Key: key, SSHServer: OpenSSH, KernelVersion: "6.1.0-56-amd64"}, "vmlinux", "initrd.cpio")
			return dir, Options{CacheDir: cache}
		}},
		{"debian", func(t *testing.T, cache string) (string, Options) {
			sources, err := debianSources(context.Background())
			if err != nil {
				t.Skipf("no Debian 12 sources on this host: %v", err)
			}
			key := debianKey(sources)
			dir := filepath.Join(cache, "images", key)
			kp := Package{Name: "linux-image-6.1.0-56-amd64", Version: "6.1.0-56"}
			writeFakeImage(t, dir, Manifest{Key: key, Distro: DistroDebian, SSHServer: OpenSSH, KernelVersion: "6.1.0-56-amd64", Packages: []Package{kp}},
				"vmlinux", "initrd.img", "disk.qcow2", "lab-initrd.cpio", "lab-initrd.key")
			return dir, Options{CacheDir: cache, Distro: DistroDebian}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache := t.TempDir()
			dir, opts := tc.setup(t, cache)
			holdBuildLock(t, cache)
			// The deadline only ends a Build that waits for the lock (the failure).
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			img, err := Build(ctx, opts)
			if err != nil {
				t.Fatalf("Build with the build lock held: %v", err)
			}
			if img.Dir != dir {
				t.Errorf("Build used %s, want the cached %s", img.Dir, dir)
			}
		})
	}
}
