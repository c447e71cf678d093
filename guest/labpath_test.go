package guest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

var testShares = []Share{
	{Guest: "/mnt/c", Host: "/home/me/.wine/drive_c", Drive: "C:"},
	{Guest: "/mnt/host", Host: "/home/me/share"},
	{Guest: "/mnt/host/deep", Host: "/srv/deep"},
}

func TestTranslatePath(t *testing.T) {
	for _, tc := range []struct {
		mode     PathMode
		abs      bool
		in, want string
		err      error
	}{
		// guest -> host
		{ToHost, false, "/mnt/c/Users/me/a.txt", `C:\Users\me\a.txt`, nil},
		{ToHost, false, "/mnt/c", `C:\`, nil},
		{ToHostMixed, false, "/mnt/c/Users/me", "C:/Users/me", nil},
		{ToHost, false, "/mnt/host/x/y", "/home/me/share/x/y", nil},
		{ToHostMixed, false, "/mnt/host/x/y", "/home/me/share/x/y", nil},
		{ToHost, false, "/mnt/host", "/home/me/share", nil},
		{ToHost, false, "/mnt/host/deep/z", "/srv/deep/z", nil}, // longest share wins
		{ToHost, false, "/mnt/hostile/x", "", ErrNotRepresentable},
		{ToHost, false, "/etc/passwd", "", ErrNotRepresentable},
		{ToHost, false, "/mnt/host/../../etc", "", ErrNotRepresentable},
		{ToHost, false, "a/b", `a\b`, nil},                 // relative stays relative
		{ToHostMixed, false, "a/b", "a/b", nil},            // relative stays relative
		{ToHost, true, "x/y", "/home/me/share/w/x/y", nil}, // -a: from cwd /mnt/host/w
		{ToHost, true, "../../c/u", `C:\u`, nil},           // -a with ..
		{ToHost, true, "../../../etc", "", ErrNotRepresentable},
		// host -> guest
		{ToGuest, false, `C:\Users\me`, "/mnt/c/Users/me", nil},
		{ToGuest, false, `c:/Users/me`, "/mnt/c/Users/me", nil},
		{ToGuest, false, `C:\`, "/mnt/c", nil},
		{ToGuest, false, `C:`, "/mnt/c", nil},
		{ToGuest, false, `C:\..\..\etc`, "/mnt/c/etc", nil}, // cannot climb out of the drive
		{ToGuest, false, `D:\x`, "", ErrNotRepresentable},
		{ToGuest, false, "/home/me/share/a/b", "/mnt/host/a/b", nil},
		{ToGuest, false, "/srv/deep/q", "/mnt/host/deep/q", nil},
		{ToGuest, false, "/home/me/shared", "", ErrNotRepresentable},
		{ToGuest, false, `a\b`, "a/b", nil},
		{ToGuest, true, `a\b`, "/mnt/host/w/a/b", nil},
		{ToGuest, false, "rel", "rel", nil},
	} {
		got, err := TranslatePath(testShares, tc.mode, tc.in, "/mnt/host/w", tc.abs)
		if !errors.Is(err, tc.err) || got != tc.want {
			t.Errorf("-%c abs=%v %q = %q, %v; want %q, %v", tc.mode, tc.abs, tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestLabpathMain(t *testing.T) {
	load := func() (*Config, error) { return &Config{Shares: testShares}, nil }
	for _, tc := range []struct {
		args         []string
		code         int
		stdout, errs string
	}{
		{[]string{`C:\x`}, 0, "/mnt/c/x\n", ""},
		{[]string{"-u", `C:\x`}, 0, "/mnt/c/x\n", ""},
		{[]string{"-w", "/mnt/c/x"}, 0, "C:\\x\n", ""},
		{[]string{"-m", "/mnt/c/x"}, 0, "C:/x\n", ""},
		{[]string{"-aw", "y"}, 0, "/home/me/share/w/y\n", ""},
		{[]string{"-a", "-w", "--", "-y"}, 0, "/home/me/share/w/-y\n", ""},
		{[]string{"-w", "/tmp"}, 1, "", "labpath: /tmp: Result not representable\n"},
		{[]string{}, 1, "", "Usage: labpath"},
		{[]string{"a", "b"}, 1, "", "Usage: labpath"},
		{[]string{"-x", "a"}, 1, "", "invalid option -- 'x'"},
		{[]string{"-h"}, 0, "Usage: labpath", ""},
	} {
		var out, errb bytes.Buffer
		code := LabpathMain(tc.args, "/mnt/host/w", load, &out, &errb)
		if code != tc.code || !strings.HasPrefix(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.errs) ||
			(tc.stdout == "" && out.Len() != 0) || (tc.errs == "" && errb.Len() != 0) {
			t.Errorf("labpath %q = %d, %q, %q; want %d, %q, %q", tc.args, code, out.String(), errb.String(), tc.code, tc.stdout, tc.errs)
		}
	}
	var errb bytes.Buffer
	code := LabpathMain([]string{"/x"}, "/", func() (*Config, error) { return nil, errors.New("guest: no config") }, &bytes.Buffer{}, &errb)
	if code != 1 || errb.String() != "labpath: guest: no config\n" {
		t.Errorf("config error: %d %q", code, errb.String())
	}
}
