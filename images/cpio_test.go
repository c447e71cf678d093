package images

import (
	"bytes"
	"io"
	"io/fs"
	"strconv"
	"testing"

	"github.com/cavaliergopher/cpio"
)

func TestWriteCPIORoundTrip(t *testing.T) {
	files := []File{
		{Path: "/etc/inittab", Mode: 0o644, Data: []byte("::sysinit:/etc/init.d/rcS\n")},
		{Path: "/root", Mode: fs.ModeDir | 0o700},
		{Path: "/root/.ssh/authorized_keys", Mode: 0o600, Data: []byte("ssh-ed25519 AAAA test\n")},
		{Path: "/init", Mode: fs.ModeSymlink | 0o777, Linkname: "bin/busybox"},
		{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		{Path: "/usr/bin/odd", Mode: fs.ModeSetuid | 0o755, Data: []byte("x")}, // 1 byte: padding
		{Path: "/dev/console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Major: 5, Minor: 1},
		{Path: "/empty", Mode: 0o644},
	}
	var buf bytes.Buffer
	if err := WriteCPIO(&buf, files); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4: an archive appended to it would not be found", buf.Len())
	}

	type entry struct {
		mode cpio.FileMode
		data string
		link string
		uid  int
	}
	got := map[string]entry{}
	var order []string
	r := cpio.NewReader(bytes.NewReader(buf.Bytes()))
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = entry{mode: h.Mode, data: string(data), link: h.Linkname, uid: h.Uid}
		order = append(order, h.Name)
	}
	want := map[string]entry{
		"etc":                       {mode: cpio.TypeDir | 0o755},
		"etc/inittab":               {mode: cpio.TypeReg | 0o644, data: "::sysinit:/etc/init.d/rcS\n"},
		"root":                      {mode: cpio.TypeDir | 0o700},
		"root/.ssh":                 {mode: cpio.TypeDir | 0o755},
		"root/.ssh/authorized_keys": {mode: cpio.TypeReg | 0o600, data: "ssh-ed25519 AAAA test\n"},
		"init":                      {mode: cpio.TypeSymlink | 0o777, link: "bin/busybox"},
		"tmp":                       {mode: cpio.TypeDir | cpio.ModeSticky | 0o777},
		"usr":                       {mode: cpio.TypeDir | 0o755},
		"usr/bin":                   {mode: cpio.TypeDir | 0o755},
		"usr/bin/odd":               {mode: cpio.TypeReg | cpio.ModeSetuid | 0o755, data: "x"},
		"dev":                       {mode: cpio.TypeDir | 0o755},
		"dev/console":               {mode: cpio.TypeChar | 0o600},
		"empty":                     {mode: cpio.TypeReg | 0o644},
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s: missing from the archive", name)
			continue
		}
		if g != w {
			t.Errorf("%s: got %+v, want %+v", name, g, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("archive has %d entries %v, want %d", len(got), order, len(want))
	}
	// Parents come before children.
	pos := map[string]int{}
	for i, n := range order {
		pos[n] = i
	}
	if pos["usr"] > pos["usr/bin"] || pos["usr/bin"] > pos["usr/bin/odd"] || pos["root"] > pos["root/.ssh"] {
		t.Errorf("parents after children: %v", order)
	}
	// Device numbers: rdevmajor and rdevminor of dev/console.
	hdrs := rawHeaders(t, buf.Bytes())
	if h := hdrs["dev/console"]; h[9] != 5 || h[10] != 1 {
		t.Errorf("dev/console rdev = %d,%d, want 5,1", h[9], h[10])
	}
	for name, h := range hdrs {
		if h[2] != 0 || h[3] != 0 {
			t.Errorf("%s: uid/gid %d/%d, want 0/0", name, h[2], h[3])
		}
	}
}

// rawHeaders decodes the 13 numeric fields of each newc header, to check
// what the cpio package does not expose.
func rawHeaders(t *testing.T, b []byte) map[string][13]uint64 {
	t.Helper()
	out := map[string][13]uint64{}
	for off := 0; off+110 <= len(b); {
		if string(b[off:off+6]) != "070701" {
			t.Fatalf("bad magic at %d", off)
		}
		var f [13]uint64
		for i := range f {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			f[i] = v
		}
		nameLen, size := int(f[11]), int(f[6])
		name := string(b[off+110 : off+110+nameLen-1])
		if name == "TRAILER!!!" {
			break
		}
		out[name] = f
		off += 110 + nameLen
		off += pad4(off)
		off += size + pad4(size)
	}
	return out
}

// Two archives written back to back read as one file tree in which the
// second archive's entries come last (the kernel lets them override).
func TestWriteCPIOConcatenated(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteCPIO(&buf, []File{{Path: "/etc/a", Mode: 0o644, Data: []byte("base")}}); err != nil {
		t.Fatal(err)
	}
	first := buf.Len()
	if err := WriteCPIO(&buf, []File{{Path: "/etc/a", Mode: 0o600, Data: []byte("instance")}}); err != nil {
		t.Fatal(err)
	}
	r := cpio.NewReader(bytes.NewReader(buf.Bytes()[first:]))
	h, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if h.Name != "etc" {
		t.Fatalf("second archive starts with %q, want its own parent dir etc", h.Name)
	}
	h, _ = r.Next()
	data, _ := io.ReadAll(r)
	if h.Name != "etc/a" || string(data) != "instance" || h.Mode.Perm() != 0o600 {
		t.Errorf("second archive: %s %v %q", h.Name, h.Mode, data)
	}
}

func TestWriteCPIOErrors(t *testing.T) {
	for _, f := range []File{
		{Path: "/link", Mode: fs.ModeSymlink | 0o777},
		{Path: "/sock", Mode: fs.ModeSocket | 0o777},
	} {
		if err := WriteCPIO(io.Discard, []File{f}); err == nil {
			t.Errorf("%s (%v): no error", f.Path, f.Mode)
		}
	}
}
