package images

import (
	"bytes"
	"io"
	"reflect"
	"strconv"
	"testing"
)

func TestParseModinfo(t *testing.T) {
	info := parseModinfo([]byte("license=GPL\x00depends=virtio,virtio_ring\x00alias=a\x00alias=b\x00noequals\x00=x\x00name=virtio_net\x00"))
	want := map[string][]string{"license": {"GPL"}, "depends": {"virtio,virtio_ring"}, "alias": {"a", "b"}, "name": {"virtio_net"}}
	if !reflect.DeepEqual(info, want) {
		t.Errorf("got %v, want %v", info, want)
	}
	if d := modinfoDepends(map[string][]string{"depends": {""}}); len(d) != 0 {
		t.Errorf("empty depends gave %q", d)
	}
	if d := modinfoDepends(map[string][]string{"depends": {"virtio-pci,  9pnet"}}); !reflect.DeepEqual(d, []string{"virtio_pci", "9pnet"}) {
		t.Errorf("got %q", d)
	}
}

func FuzzParseModinfo(f *testing.F) {
	f.Add([]byte("depends=virtio,virtio_ring\x00name=virtio_net\x00"))
	f.Add([]byte("\x00\x00=\x00depends=,,\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		info := parseModinfo(b)
		for _, d := range modinfoDepends(info) {
			if d == "" || bytes.ContainsAny([]byte(d), ",-") {
				t.Errorf("bad dependency name %q", d)
			}
		}
	})
}

func TestModuleOrder(t *testing.T) {
	deps := map[string][]string{
		"9p": {"9pnet", "netfs", "fscache"}, "fscache": {"netfs"}, "9pnet": nil, "netfs": nil,
		"virtio_net": {"net_failover", "virtio", "virtio_ring"}, "net_failover": {"failover"},
		"failover": nil, "virtio": {"virtio_ring"}, "virtio_ring": nil,
		"a": {"b"}, "b": {"a"},
	}
	dep := func(n string) ([]string, error) {
		d, ok := deps[n]
		if !ok {
			return nil, io.ErrUnexpectedEOF
		}
		return d, nil
	}
	got, err := moduleOrder([]string{"9p", "virtio-net", "builtin_thing"}, func(n string) bool { return n == "builtin_thing" }, dep)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"9pnet", "netfs", "fscache", "9p", "failover", "net_failover", "virtio_ring", "virtio", "virtio_net"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if _, err := moduleOrder([]string{"a"}, nil, dep); err == nil {
		t.Error("cycle a -> b -> a: no error")
	}
	if _, err := moduleOrder([]string{"missing"}, nil, dep); err == nil {
		t.Error("missing module: no error")
	}
}

// ar archives as dpkg-deb writes them.
func arArchive(members ...[2]string) []byte {
	var b bytes.Buffer
	b.WriteString(arMagic)
	for _, m := range members {
		hdr := []byte(padRight(m[0], 16) + padRight("0", 12) + padRight("0", 6) + padRight("0", 6) + padRight("100644", 8) + padRight(strconv.Itoa(len(m[1])), 10) + "`\n")
		b.Write(hdr)
		b.WriteString(m[1])
		if len(m[1])%2 == 1 {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

func padRight(s string, n int) string {
	for len(s) < n {
		s += " "
	}
	return s
}

func TestARReader(t *testing.T) {
	b := arArchive([2]string{"debian-binary", "2.0\n"}, [2]string{"control.tar.xz/", "odd"}, [2]string{"data.tar", "payload"})
	r, err := newARReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var got [][2]string
	for {
		m, err := r.Next()
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
		if int64(len(data)) != m.Size {
			t.Errorf("%s: read %d bytes, header says %d", m.Name, len(data), m.Size)
		}
		got = append(got, [2]string{m.Name, string(data)})
	}
	want := [][2]string{{"debian-binary", "2.0\n"}, {"control.tar.xz", "odd"}, {"data.tar", "payload"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	// Members skipped without reading.
	r, _ = newARReader(bytes.NewReader(b))
	r.Next()
	r.Next()
	if m, err := r.Next(); err != nil || m.Name != "data.tar" {
		t.Errorf("after skipping: %v, %v", m, err)
	}
	for _, bad := range [][]byte{[]byte("!<arch>\nshort"), []byte("nope"), append([]byte(arMagic), bytes.Repeat([]byte("x"), 60)...)} {
		r, err := newARReader(bytes.NewReader(bad))
		if err != nil {
			continue
		}
		if _, err := r.Next(); err == nil || err == io.EOF {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzARReader(f *testing.F) {
	f.Add(arArchive([2]string{"debian-binary", "2.0\n"}, [2]string{"data.tar.xz", "abc"}))
	f.Add([]byte(arMagic + "x"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := newARReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		for i := 0; i < 100; i++ {
			m, err := r.Next()
			if err != nil {
				return
			}
			n, _ := io.Copy(io.Discard, r)
			if n > m.Size {
				t.Fatalf("read %d bytes of a %d-byte member", n, m.Size)
			}
		}
	})
}

func TestParseControl(t *testing.T) {
	in := "Package: libssl3\nVersion: 3.0.22-1~deb12u2\nDepends: libc6 (>= 2.34)\nDescription: short\n long line\n .\n\nPackage: zlib1g\nPre-Depends: libc6 (>= 2.14)\nVersion: 1:1.2.13.dfsg-1\n"
	got := parseControl([]byte(in))
	if len(got) != 2 {
		t.Fatalf("got %d stanzas: %v", len(got), got)
	}
	if got[0]["Version"] != "3.0.22-1~deb12u2" || got[0]["Description"] != "short\nlong line\n." || got[1]["Version"] != "1:1.2.13.dfsg-1" {
		t.Errorf("got %q", got)
	}
	deps := parseDepends("libc6 (>= 2.34), libfoo1 | libbar1, libz:any, , libq [amd64]")
	if want := []string{"libc6", "libfoo1", "libz", "libq"}; !reflect.DeepEqual(deps, want) {
		t.Errorf("parseDepends: got %q, want %q", deps, want)
	}
	p := Package{Name: "busybox-static", Version: "1:1.35.0-4+deb12u1+b1", Arch: "amd64"}
	if got := p.debFile(); got != "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb" {
		t.Errorf("debFile: %s", got)
	}
}

func FuzzParseControl(f *testing.F) {
	f.Add([]byte("Package: a\nVersion: 1\n continued\n\nPackage: b\n"))
	f.Add([]byte(" leading continuation\n:\n\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, st := range parseControl(b) {
			if len(st) == 0 {
				t.Fatal("empty stanza")
			}
			for _, d := range parseDepends(st["Depends"]) {
				if d == "" {
					t.Fatal("empty dependency name")
				}
			}
		}
	})
}

func TestParseAptDepends(t *testing.T) {
	out := `linux-image-amd64
  Depends: linux-image-6.1.0-56-amd64
openssh-server
  PreDepends: init-system-helpers
 |Depends: debconf
  Depends: <debconf-2.0>
    cdebconf
  Depends: libssl3
  Depends: libc6:any
<debconf-2.0>
libssl3
  Depends: libc6
`
	g := parseAptDepends([]byte(out))
	want := map[string][]string{
		"linux-image-amd64": {"linux-image-6.1.0-56-amd64"},
		"openssh-server":    {"init-system-helpers", "debconf", "libssl3", "libc6"},
		"libssl3":           {"libc6"},
	}
	if !reflect.DeepEqual(g, want) {
		t.Errorf("got %v, want %v", g, want)
	}
}

// Found by FuzzParseAptDepends: a line of white space other than spaces
// named a package "", and "Depends::x" a dependency "".
func TestParseAptDependsBlankNames(t *testing.T) {
	for _, in := range []string{"\t", "\t\n  Depends: x\n", " \t \n"} {
		if g := parseAptDepends([]byte(in)); len(g) != 0 {
			t.Errorf("%q: got %v", in, g)
		}
	}
	if g := parseAptDepends([]byte("0\n Depends::0")); len(g["0"]) != 0 {
		t.Errorf("Depends::0 gave %q", g["0"])
	}
}

func FuzzParseAptDepends(f *testing.F) {
	f.Add([]byte("a\n  Depends: b\n |Depends: <c>\n<d>\n  Depends: e\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for k, vs := range parseAptDepends(b) {
			if k == "" {
				t.Fatal("empty package name")
			}
			for _, v := range vs {
				if v == "" {
					t.Fatalf("%s: empty dependency", k)
				}
			}
		}
	})
}

func TestBzImageVersion(t *testing.T) {
	b := make([]byte, 0x400)
	copy(b[0x202:], "HdrS")
	b[0x20e] = 0x00
	b[0x20f] = 0x01 // version string at 0x100 + 0x200
	copy(b[0x300:], "6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP\x00")
	if v, ok := bzImageVersion(b); !ok || v != "6.1.0-56-amd64" {
		t.Errorf("got %q %v", v, ok)
	}
	if _, ok := bzImageVersion(b[:0x100]); ok {
		t.Error("short image: ok")
	}
}

func FuzzBzImageVersion(f *testing.F) {
	f.Add(append(make([]byte, 0x202), []byte("HdrS\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff")...))
	f.Fuzz(func(t *testing.T, b []byte) { bzImageVersion(b) })
}
