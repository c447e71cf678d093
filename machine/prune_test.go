package machine

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"lab/images"
	"lab/internal/labtest"
	"lab/internal/labtest/imagetest"
	"lab/pefixtures"
	"lab/vm"
)

// qcow2 writes the header of a qcow2 overlay whose backing file is backing.
func qcow2(t *testing.T, path, backing string) {
	t.Helper()
	h := make([]byte, 512)
	copy(h, "QFI\xfb")
	binary.BigEndian.PutUint32(h[4:], 3)
	binary.BigEndian.PutUint64(h[8:], 104)
	binary.BigEndian.PutUint32(h[16:], uint32(len(backing)))
	copy(h[104:], backing)
	labtest.WriteSized(t, path, 0)
	if err := os.WriteFile(path, h, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFindUnused: what lab image prune removes and what it keeps.
func TestFindUnused(t *testing.T) {
	stateBase, dataBase, cache := labtest.TempXDG(t)
	day := func(n int) time.Time { return time.Date(2026, 12, n, 0, 0, 0, 0, time.UTC) }
	libc := func(v string) images.Package { return images.Package{Name: "libc6", Version: v, Arch: "amd64"} }
	kernel := func(v string) images.Package {
		return images.Package{Name: "linux-image-6.1.0-1-amd64", Version: v, Arch: "amd64"}
	}
	img := func(k string) string { return filepath.Join(cache, "images", k) }
	imagetest.Fake(t, img("old"), "openssh", day(1), libc("2.36"), kernel("6.1.1"))
	imagetest.Fake(t, img("new"), "openssh", day(3), libc("2.37"), kernel("6.1.2"))
	imagetest.Fake(t, img("running"), "openssh", day(1), libc("2.37"), kernel("6.1.2"))
	imagetest.Fake(t, img("kept-disk"), "openssh", day(1), libc("2.37"), kernel("6.1.2"))
	imagetest.Fake(t, img("kept-record"), "openssh", day(2), libc("2.37"), kernel("6.1.2"))
	imagetest.Fake(t, img("dropbear"), "dropbear", day(1), libc("2.36"), kernel("6.1.1"))
	labtest.WriteSized(t, filepath.Join(img("not-lab"), "x"), 10) // no manifest: not ours to judge
	labtest.WriteSized(t, filepath.Join(img("stale.tmp"), "x"), 10)
	longAgo := time.Now().Add(-2 * time.Hour)
	os.Chtimes(img("stale.tmp"), longAgo, longAgo)
	labtest.WriteSized(t, filepath.Join(img("building.tmp"), "x"), 10) // a build in progress
	labtest.WriteSized(t, filepath.Join(cache, "kernels", "linux-image-6.1.0-1-amd64_6.1.1", "vmlinux"), 100)
	labtest.WriteSized(t, filepath.Join(cache, "kernels", "linux-image-6.1.0-1-amd64_6.1.0", "vmlinux"), 100)
	labtest.WriteSized(t, filepath.Join(cache, "kernels", "linux-image-6.1.0-1-amd64_6.1.2", "vmlinux"), 100)
	for _, d := range []string{"libc6_2.35_amd64.deb", "libc6_2.36_amd64.deb", "libc6_2.37_amd64.deb"} {
		labtest.WriteSized(t, filepath.Join(cache, "debs", d), 100)
	}
	labtest.WriteSized(t, filepath.Join(cache, "wine-template", "system.reg"), 100)
	os.WriteFile(filepath.Join(cache, "wine-template", ".lab-template.json"), []byte(`{"wine_version":"wine-0.1 (gone)"}`), 0o644)
	key, err := pefixtures.CacheKey()
	if err != nil {
		t.Fatal(err)
	}
	labtest.WriteSized(t, filepath.Join(cache, "pefixtures", key, "clip.exe"), 100)
	labtest.WriteSized(t, filepath.Join(cache, "pefixtures", "0123456789abcdef0123", "clip.exe"), 100)
	// A running machine booted from "running"; a kept one whose disk is backed by
	// kept-disk, and one whose record names kept-record.
	in, _ := json.Marshal(vm.Instance{Name: "vm1", Kernel: filepath.Join(img("running"), "vmlinux"), Argv: []string{"-kernel", filepath.Join(img("running"), "vmlinux")}})
	labtest.WriteSized(t, filepath.Join(stateBase, "vm1", vm.FileInstance), 0)
	os.WriteFile(filepath.Join(stateBase, "vm1", vm.FileInstance), in, 0o644)
	qcow2(t, filepath.Join(dataBase, "deb1", "disk.qcow2"), filepath.Join(img("kept-disk"), "rootfs.qcow2"))
	labtest.WriteSized(t, filepath.Join(dataBase, "deb2", "machine.json"), 0)
	os.WriteFile(filepath.Join(dataBase, "deb2", "machine.json"), []byte(`{"image":{"dir":"`+img("kept-record")+`"}}`), 0o644)

	ctx := context.Background()
	items, err := FindUnused(ctx, cache)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range items {
		got = append(got, it.Kind+" "+strings.TrimPrefix(it.Path, cache+"/"))
		if it.Bytes <= 0 {
			t.Errorf("%s: size %d", it.Path, it.Bytes)
		}
	}
	sort.Strings(got)
	want := []string{
		"deb debs/libc6_2.35_amd64.deb",
		"fixtures pefixtures/0123456789abcdef0123",
		"image images/old",
		"kernel kernels/linux-image-6.1.0-1-amd64_6.1.0",
		"leftover images/stale.tmp",
		"wine wine-template",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("unused:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err := RemoveUnused(ctx, cache, items); err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if _, err := os.Stat(it.Path); !os.IsNotExist(err) {
			t.Errorf("RemoveUnused left %s", it.Path)
		}
	}
	if items, err := FindUnused(ctx, cache); err != nil || len(items) != 0 {
		t.Errorf("after RemoveUnused: %v, %v; want nothing left to prune", items, err)
	}
	for _, keep := range []string{"new", "running", "kept-disk", "kept-record", "dropbear", "not-lab", "building.tmp"} {
		if _, err := os.Stat(img(keep)); err != nil {
			t.Errorf("prune removed images/%s: %v", keep, err)
		}
	}
	// A machine record that is not JSON stops prune before it removes anything.
	os.WriteFile(filepath.Join(dataBase, "deb2", "machine.json"), []byte("{"), 0o644)
	if _, err := FindUnused(ctx, cache); err == nil || err.Error() != filepath.Join(dataBase, "deb2", "machine.json")+" is not JSON: not pruning anything a machine might use (lab delete the machine, or fix the file)" {
		t.Errorf("a broken machine.json: %v", err)
	}
}
