package formats

import "testing"

func TestMatches(t *testing.T) {
	magic, mask, _ := QEMUELF("aarch64")
	arm := Format{Name: "arm64", Magic: magic, Mask: mask}
	elf := func(typ, machine byte) []byte {
		h := []byte("\x7fELF\x02\x01\x01\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
		h[16], h[18] = typ, machine
		return h
	}
	for _, tc := range []struct {
		f    Format
		name string
		head []byte
		want bool
	}{
		{arm, "/x", elf(2, 0xb7), true},  // ET_EXEC (the OS ABI byte 7 is masked out)
		{arm, "/x", elf(3, 0xb7), true},  // ET_DYN
		{arm, "/x", elf(1, 0xb7), false}, // ET_REL
		{arm, "/x", elf(2, 0x3e), false}, // x86-64
		{arm, "/x", elf(2, 0xb7)[:19], false},
		{Format{Name: "jar", Extension: "jar"}, "/a/b.jar", nil, true},
		{Format{Name: "jar", Extension: "jar"}, "/a/b.jar.txt", nil, false},
		{Format{Name: "jar", Extension: "jar"}, "/a/jar", nil, false},
		{Format{Name: "off", Offset: 2, Magic: []byte("ab")}, "f", []byte("xxab"), true},
		{Format{Name: "off", Offset: 2, Magic: []byte("ab")}, "f", []byte("abxx"), false},
	} {
		if got := tc.f.Matches(tc.name, tc.head); got != tc.want {
			t.Errorf("%s.Matches(%q, %x) = %v", tc.f.Name, tc.name, tc.head, got)
		}
	}
	if f, ok := Detect(Builtin(), "x.exe", []byte("MZ\x90")); !ok || f.Name != PE || f.Runner.Kind != Wine {
		t.Errorf("Detect(MZ) = %+v, %v", f, ok)
	}
}

func TestValidate(t *testing.T) {
	sh := Runner{Kind: Interpreter, Command: []string{"/bin/sh"}}
	for _, tc := range []struct {
		f    Format
		want string
	}{
		{Format{Name: "ok", Extension: "sh", Runner: sh}, ""},
		{Format{Name: "", Extension: "sh", Runner: sh}, `formats: name "": want 1 to 28 characters`},
		{Format{Name: "host", Magic: []byte("x"), Runner: sh}, `formats: "host" is a built-in format's name`},
		{Format{Name: "a", Magic: []byte("x"), Extension: "y", Runner: sh}, "formats: a: give a magic or an extension, not both"},
		{Format{Name: "a", Offset: 127, Magic: []byte("xy"), Runner: sh}, "formats: a: the magic must lie within the first 128 bytes"},
		{Format{Name: "a", Magic: []byte("xy"), Mask: []byte{1}, Runner: sh}, "formats: a: mask and magic differ in length"},
		{Format{Name: "a", Magic: []byte("x"), Runner: Runner{Kind: Exec, Command: []string{"/bin/sh"}}}, "formats: a: runner exec takes no command"},
		{Format{Name: "a", Magic: []byte("x"), Runner: Runner{Kind: Exposed}}, `formats: a: runner "exposed": want exec, wine or interpreter`},
	} {
		err := tc.f.Validate()
		if got := ""; err != nil {
			got = err.Error()
			if got != tc.want {
				t.Errorf("%+v: %q, want %q", tc.f, got, tc.want)
			}
		} else if tc.want != "" {
			t.Errorf("%+v: valid, want %q", tc.f, tc.want)
		}
	}
}

func TestString(t *testing.T) {
	for _, tc := range []struct {
		f    Format
		want string
	}{
		{Format{Name: "labsh", Extension: "labsh", Runner: Runner{Kind: Interpreter, Command: []string{"/bin/sh"}}}, "labsh: *.labsh -> interpreter /bin/sh"},
		{Format{Name: "x", Offset: 2, Magic: []byte{1, 2}, Mask: []byte{0xff, 0xfe}, Runner: Runner{Kind: Exec}}, "x: magic 0102 at 2 mask fffe -> exec"},
	} {
		if got := tc.f.String(); got != tc.want {
			t.Errorf("%q, want %q", got, tc.want)
		}
	}
}
