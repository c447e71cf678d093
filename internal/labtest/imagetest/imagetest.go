// Package imagetest makes fake entries of the image cache for tests of what reads the
// cache (pruning, lab image). It is apart from package labtest because package images'
// own tests use labtest, and this package needs images' manifest.
package imagetest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"lab/images"
	"lab/internal/labtest"
)

// Fake writes an initramfs image into dir as the cache holds one: a manifest with the
// SSH server, build time and packages given, and a kernel and initrd of 3000 bytes each.
func Fake(t testing.TB, dir, server string, built time.Time, pkgs ...images.Package) {
	t.Helper()
	b, err := json.Marshal(images.Manifest{SSHServer: server, Built: built, Packages: pkgs})
	if err != nil {
		t.Fatal(err)
	}
	labtest.WriteSized(t, filepath.Join(dir, "vmlinux"), 3000)
	labtest.WriteSized(t, filepath.Join(dir, "initrd.cpio"), 3000)
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}
