package images

import (
	"context"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lab/internal/labtest"
	"lab/internal/xdg"
)

// realImage builds (or reuses) an image in the user's cache, so tests can
// look at the real packages and modules it was made from.
func realImage(t *testing.T, server string) (*Image, string) {
	t.Helper()
	labtest.Need(t, "apt-get") // Debian's packages: a Debian or Ubuntu host
	cache, err := xdg.Dir(xdg.Cache)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	img, err := Build(ctx, Options{CacheDir: cache, SSHServer: server})
	if err != nil {
		t.Fatal(err)
	}
	return img, cache
}

func TestModuleOrderRealKernel(t *testing.T) {
	img, cache := realImage(t, DefaultSSHServer)
	kp, ok := kernelPackage(img.Manifest)
	if !ok {
		t.Skip("the image's kernel did not come from a package")
	}
	dir := filepath.Join(kernelPkgDir(cache, kp), "lib/modules", img.KernelVersion)
	ms, err := openModules(dir)
	if err != nil {
		t.Fatal(err)
	}
	mods, err := ms.closure(moduleRoots)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range mods {
		if _, dup := pos[m.Name]; dup {
			t.Errorf("%s loaded twice", m.Name)
		}
		pos[m.Name] = i
	}
	// Every module comes after everything its .modinfo says it depends on.
	for _, m := range mods {
		info, err := readModinfo(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if got := modName(info["name"][0]); got != m.Name {
			t.Errorf("%s: .modinfo name is %s", m.Name, got)
		}
		for _, d := range modinfoDepends(info) {
			if p, ok := pos[d]; !ok || p > pos[m.Name] {
				t.Errorf("%s (at %d) depends on %s (at %d, present %v)", m.Name, pos[m.Name], d, p, ok)
			}
		}
	}
	// The known chains of Debian's 6.1 kernel.
	for _, chain := range [][]string{
		{"virtio_ring", "virtio", "virtio_pci"},
		{"failover", "net_failover", "virtio_net"},
		{"vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport"},
		{"9pnet", "9pnet_virtio"},
		{"netfs", "fscache", "9p"},
		{"binfmt_misc"}, {"button"}, {"evdev"}, {"virtio_rng"},
	} {
		for i, n := range chain {
			if _, ok := pos[n]; !ok {
				t.Errorf("%s missing from %v", n, names(mods))
			} else if i > 0 && pos[chain[i-1]] > pos[n] {
				t.Errorf("%s loads before %s", n, chain[i-1])
			}
		}
	}
	if len(img.Manifest.Modules) != len(mods) {
		t.Errorf("manifest lists %d modules, closure has %d", len(img.Manifest.Modules), len(mods))
	}
}

func names(mods []loadedModule) []string {
	var out []string
	for _, m := range mods {
		out = append(out, m.Name)
	}
	return out
}

func TestLibraryClosureRealPackages(t *testing.T) {
	for _, tc := range []struct {
		server string
		want   []string // sonames the closure must hold
	}{
		{Dropbear, []string{"libc.so.6", "ld-linux-x86-64.so.2", "libtomcrypt.so.1", "libtommath.so.1", "libgmp.so.10", "libz.so.1", "libcrypt.so.1", "libssl.so.3", "libcrypto.so.3"}},
		{OpenSSH, []string{"libc.so.6", "ld-linux-x86-64.so.2", "libcrypto.so.3", "libkrb5.so.3", "libgssapi_krb5.so.2", "libsystemd.so.0", "libselinux.so.1", "libpam.so.0", "libwrap.so.0", "libaudit.so.1", "libz.so.1"}},
	} {
		t.Run(tc.server, func(t *testing.T) {
			img, cache := realImage(t, tc.server)
			rc, _ := newRecipe(tc.server)
			var kernel string
			for _, p := range img.Manifest.Packages {
				if strings.HasPrefix(p.Name, "linux-image-") {
					kernel = p.Name
				}
			}
			tr, err := unpackTree(context.Background(), filepath.Join(cache, "debs"), img.Manifest.Packages, kernel, nil)
			if err != nil {
				t.Fatal(err)
			}
			paths, err := tr.closure(rc.programs)
			if err != nil {
				t.Fatal(err)
			}
			have := map[string]bool{}
			for _, p := range paths {
				have[path.Base(p)] = true
			}
			for _, w := range tc.want {
				if !have[w] {
					t.Errorf("closure lacks %s: %v", w, paths)
				}
			}
			// Closed: every DT_NEEDED of every ELF file in it resolves to
			// a path in it.
			in := map[string]bool{}
			for _, p := range paths {
				in[p] = true
			}
			for _, p := range paths {
				n := tr.nodes[p]
				if n.link != "" || len(n.data) < 4 || string(n.data[:4]) != "\x7fELF" {
					continue
				}
				needs, err := elfNeeds(p, n.data)
				if err != nil {
					t.Fatal(err)
				}
				for _, need := range needs {
					lib, err := tr.findLib(need, p, n.data)
					if err != nil {
						t.Errorf("%s: %s: %v", p, need.name, err)
						continue
					}
					final, links, _ := tr.resolve(lib)
					for _, q := range append(links, final) {
						if !in[q] {
							t.Errorf("%s needs %s: %s is not in the closure", p, need.name, q)
						}
					}
				}
			}
			// And the image holds exactly these files.
			files := map[string]bool{}
			for _, f := range img.Manifest.Files {
				files[f.Path] = true
			}
			for _, p := range paths {
				if !files[p] {
					t.Errorf("%s is in the closure but not in the image", p)
				}
			}
		})
	}
}
