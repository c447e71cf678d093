package share

import (
	"slices"
	"testing"
)

func TestConfValueRoundTrip(t *testing.T) {
	for _, s := range []Share{
		{GuestPath: "/mnt/host", HostPath: "/home/me/src"},
		{GuestPath: "/mnt/a b", HostPath: "/home/me/my docs"},
		{GuestPath: "/mnt/q", HostPath: `/h/"quoted" and 'single'`},
		{GuestPath: "/mnt/hash", HostPath: "/h/#not-a-comment"},
		{GuestPath: "/mnt/bs", HostPath: `/h/back\slash`},
		{GuestPath: "/mnt/tick", HostPath: "/h/`tick`"},
		{GuestPath: "/mnt/ctl", HostPath: "/h/tab\there/nl\nhere"},
		{GuestPath: "/mnt/ü", HostPath: "/h/ünïcødé/日本"},
		{GuestPath: "/mnt/bad", HostPath: "/h/\xff\xfe"},
		{GuestPath: "/mnt/c", HostPath: "/data/windows/drive_c", Drive: "C:"},
	} {
		v := s.ConfValue()
		got, err := ParseConfValue(v)
		if err != nil || got != s {
			t.Errorf("ParseConfValue(%q) = %+v, %v; want %+v", v, got, err, s)
		}
	}
	// The plain case stays readable.
	if v := (Share{GuestPath: "/mnt/host", HostPath: "/home/me/src", Drive: "D:"}).ConfValue(); v != "/mnt/host /home/me/src D:" {
		t.Errorf("ConfValue = %q", v)
	}
}

func TestParseConfValueErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/mnt/x", "share wants GUEST HOST [DRIVE], got 1 values"},
		{"/a /b C: extra", "share wants GUEST HOST [DRIVE], got 4 values"},
		{"mnt/x /b", `share paths must be absolute, got "mnt/x" "/b"`},
		{"/mnt/x b", `share paths must be absolute, got "/mnt/x" "b"`},
		{"/a /b CC", `share drive must look like C:, got "CC"`},
		{"/a /b 1:", `share drive must look like C:, got "1:"`},
		{`/a "/b`, `bad quoted string in "\"/b"`},
	} {
		if _, err := ParseConfValue(tc.in); err == nil || err.Error() != tc.want {
			t.Errorf("ParseConfValue(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
	if s, err := ParseConfValue("/mnt/c/ /w/drive_c/ c: # the Windows side"); err != nil || s != (Share{GuestPath: "/mnt/c", HostPath: "/w/drive_c", Drive: "C:"}) {
		t.Errorf("cleaned paths, lower-case drive, comment: %+v, %v", s, err)
	}
}

// FuzzConfValue: whatever ParseConfValue accepts, ConfValue writes back to the same share;
// any field QuoteField writes, SplitFields reads back as one field.
func FuzzConfValue(f *testing.F) {
	for _, seed := range []string{
		"/mnt/host /home/me/src",
		"/mnt/c /data/windows/drive_c C:",
		`"/mnt/a b" "/home/me/my docs" d:`,
		`/mnt/x "/h/\"q\" \\ #" # comment`,
		"/mnt/ü /h/日本\t",
		`"/mnt/\xff" "/h/\x00"`,
		"/a",
		`/a "/b`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if fields, err := SplitFields(QuoteField(v)); err != nil || !slices.Equal(fields, []string{v}) {
			t.Fatalf("SplitFields(QuoteField(%q)) = %q, %v", v, fields, err)
		}
		s, err := ParseConfValue(v)
		if err != nil {
			return
		}
		back, err := ParseConfValue(s.ConfValue())
		if err != nil || back != s {
			t.Fatalf("%q: parsed %+v, wrote %q, read back %+v, %v", v, s, s.ConfValue(), back, err)
		}
	})
}
