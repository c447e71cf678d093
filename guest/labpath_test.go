package guest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

var testShares = []Share{
	{GuestPath: "/mnt/c", HostPath: "/home/me/.wine/drive_c", Drive: "C:"},
	{GuestPath: "/mnt/host", HostPath: "/home/me/share"},
	{GuestPath: "/mnt/host/deep", HostPath: "/srv/deep"},
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
		{ToHost, false, "a/b", "a/b", nil},                 // relative stays relative (cwd in a host share)
		{ToHostMixed, false, "a/b", "a/b", nil},            // relative stays relative
		{ToHost, true, "x/y", "/home/me/share/w/x/y", nil}, // -a: from cwd /mnt/host/w
		{ToHost, true, "../../c/u", `C:\u`, nil},           // -a with ..
		{ToHost, true, "../../../etc", "", ErrNotRepresentable},
		// host -> guest
		{ToGuest, false, `C:\Users\me`, "/mnt/c/Users/me", nil},
		{ToGuest, false, `c:/Users/me`, "/mnt/c/Users/me", nil},
		{ToGuest, false, `C:\`, "/mnt/c/", nil},              // trailing separator kept (WSL)
		{ToGuest, false, `C:`, "C:", nil},                    // not absolute: a relative name, as in WSL
		{ToGuest, false, `C:\..\..\etc`, "", ErrInvalidPath}, // cannot climb out of the drive (WSL: EINVAL)
		{ToGuest, false, `D:\x`, "", ErrNotRepresentable},
		{ToGuest, false, "/home/me/share/a/b", "/mnt/host/a/b", nil},
		{ToGuest, false, "/srv/deep/q", "/mnt/host/deep/q", nil},
		{ToGuest, false, "/home/me/shared", "", ErrInvalidPath}, // WSL: root of the cwd's drive; the cwd has none
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

// TestTranslateDrives: the Windows personality's `drive = C: /mnt/c` (WSL's /mnt/c), alone
// and beside shares.
func TestTranslateDrives(t *testing.T) {
	drivesOnly := &Config{Drives: []Drive{{Letter: "C:", Guest: "/mnt/c"}}}
	mixed := &Config{
		Shares: []Share{
			{GuestPath: "/mnt/c", HostPath: "/home/me/.local/state/lab/default/wine/drive_c"},
			{GuestPath: "/mnt/host", HostPath: "/home/me/share"},
		},
		Drives: []Drive{{Letter: "C:", Guest: "/mnt/c"}, {Letter: "D:", Guest: "/mnt/host/data"}},
	}
	for _, tc := range []struct {
		name     string
		c        *Config
		mode     PathMode
		abs      bool
		in, want string
		err      error
	}{
		{"w", drivesOnly, ToHost, false, "/mnt/c/x", `C:\x`, nil},
		{"w root", drivesOnly, ToHost, false, "/mnt/c", `C:\`, nil},
		{"w nested", drivesOnly, ToHost, false, "/mnt/c/windows/system32/cmd.exe", `C:\windows\system32\cmd.exe`, nil},
		{"w spaces utf8", drivesOnly, ToHost, false, "/mnt/c/Program Files/ü", `C:\Program Files\ü`, nil},
		{"m", drivesOnly, ToHostMixed, false, "/mnt/c/x", "C:/x", nil},
		{"m root", drivesOnly, ToHostMixed, false, "/mnt/c/", "C:/", nil},
		{"w outside", drivesOnly, ToHost, false, "/mnt/cx/y", "", ErrNotRepresentable},
		{"w home", drivesOnly, ToHost, false, "/root", "", ErrNotRepresentable},
		{"w abs from cwd", drivesOnly, ToHost, true, "y", `C:\work\y`, nil},
		{"w relative", drivesOnly, ToHost, false, "a/b", `a\b`, nil},
		{"u", drivesOnly, ToGuest, false, `C:\x`, "/mnt/c/x", nil},
		{"u lower slash", drivesOnly, ToGuest, false, `c:/x/y`, "/mnt/c/x/y", nil},
		{"u root", drivesOnly, ToGuest, false, `C:\`, "/mnt/c/", nil},
		{"u climb", drivesOnly, ToGuest, false, `C:\..\etc`, "", ErrInvalidPath},
		{"u other drive", drivesOnly, ToGuest, false, `D:\x`, "", ErrNotRepresentable},
		{"u rooted path: root of the cwd's drive (WSL)", drivesOnly, ToGuest, false, "/home/me/x", "/mnt/c/home/me/x", nil},
		{"mixed w drive", mixed, ToHost, false, "/mnt/c/Users", `C:\Users`, nil},
		{"mixed w share", mixed, ToHost, false, "/mnt/host/a", "/home/me/share/a", nil},
		{"mixed w second drive wins (longest)", mixed, ToHost, false, "/mnt/host/data/f", `D:\f`, nil},
		{"mixed m second drive", mixed, ToHostMixed, false, "/mnt/host/data/f", "D:/f", nil},
		{"mixed u drive", mixed, ToGuest, false, `D:\f`, "/mnt/host/data/f", nil},
		{"mixed u host path of drive_c", mixed, ToGuest, false, "/home/me/.local/state/lab/default/wine/drive_c/x", "/mnt/c/x", nil},
		{"mixed u host path of share", mixed, ToGuest, false, "/home/me/share/q", "/mnt/host/q", nil},
	} {
		got, err := tc.c.Translate(tc.mode, tc.in, "/mnt/c/work", tc.abs)
		if !errors.Is(err, tc.err) || got != tc.want {
			t.Errorf("%s: -%c abs=%v %q = %q, %v; want %q, %v", tc.name, tc.mode, tc.abs, tc.in, got, err, tc.want, tc.err)
		}
	}
	// The config is not changed by merging.
	if mixed.Shares[0].Drive != "" {
		t.Errorf("Translate changed the config's shares: %+v", mixed.Shares)
	}
}

func TestLabpathMainDrive(t *testing.T) {
	cfg, err := ParseConfig(strings.NewReader("drive = C:/mnt/c\n"), "t")
	if err != nil {
		t.Fatal(err)
	}
	load := func() (*Config, error) { return cfg, nil }
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string
	}{
		{[]string{"-w", "/mnt/c/x"}, 0, "C:\\x\n"},
		{[]string{"-u", `C:\x`}, 0, "/mnt/c/x\n"},
		{[]string{`C:\x`}, 0, "/mnt/c/x\n"},
		{[]string{"-m", "/mnt/c/x"}, 0, "C:/x\n"},
		{[]string{"-w", "/tmp"}, 1, ""},
	} {
		var out, errb bytes.Buffer
		if code := LabpathMain(tc.args, "/mnt/c", load, &out, &errb); code != tc.code || out.String() != tc.stdout {
			t.Errorf("labpath %q = %d, %q (stderr %q); want %d, %q", tc.args, code, out.String(), errb.String(), tc.code, tc.stdout)
		}
	}
}
