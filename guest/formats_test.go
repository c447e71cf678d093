package guest

import (
	"reflect"
	"strings"
	"testing"
)

func TestDetectFormatOfExtension(t *testing.T) {
	configured := []Format{
		{Name: "labsh", Extension: "labsh"},
		{Name: "labpy", Magic: []byte("#!labpy")},
	}
	for _, tc := range []struct{ file, head, want string }{
		{"/mnt/lab/t.labsh", "echo hi\n", "labsh"},
		{"t.labsh", "MZ", "pe"}, // built-ins first, as the kernel's rules are registered first
		{"/mnt/lab/t.labsh.txt", "echo hi\n", ""},
		{"/mnt/lab/labsh", "echo hi\n", ""},
		{"/mnt/lab/x", "#!labpy\nprint(1)\n", "labpy"},
		{"/mnt/lab/x.labsh", "#!lab-host\nhostecho\n", "host"},
	} {
		if got := DetectFormatOf(tc.file, []byte(tc.head), configured); got != tc.want {
			t.Errorf("DetectFormatOf(%q, %q) = %q, want %q", tc.file, tc.head, got, tc.want)
		}
	}
}

func TestConfigExtensionFormat(t *testing.T) {
	c, err := ParseConfig(strings.NewReader("format = jar .jar\nformat = py 0 23216c6162 ffffffffff\n"), "test")
	if err != nil {
		t.Fatal(err)
	}
	want := []Format{{Name: "jar", Extension: "jar"}, {Name: "py", Magic: []byte("#!lab"), Mask: []byte{0xff, 0xff, 0xff, 0xff, 0xff}}}
	if !reflect.DeepEqual(c.Formats, want) {
		t.Fatalf("formats %+v, want %+v", c.Formats, want)
	}
	text, err := c.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(text), "format = jar .jar\n") {
		t.Errorf("marshalled:\n%s", text)
	}
	for _, tc := range []struct{ line, want string }{
		{"format = pe .exe", `format name "pe" is empty, too long or built in`},
		{"format = x .a/b", `format x: extension "a/b": want a word without '.', '/', ':' or spaces`},
		{"format = x jar", "format wants NAME OFFSET MAGIC [MASK] (magic and mask in hex) or NAME .EXTENSION, got 2 values"},
	} {
		_, err := ParseConfig(strings.NewReader(tc.line+"\n"), "test")
		if err == nil || !strings.HasSuffix(err.Error(), tc.want) {
			t.Errorf("%q: %v, want ...%s", tc.line, err, tc.want)
		}
	}
}
