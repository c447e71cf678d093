package guest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadConfigTrust(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.conf")
	write(t, good, "relay = unix:/run/r.sock\n", 0o644)
	writable := filepath.Join(dir, "writable.conf")
	write(t, writable, "relay = unix:/evil\n", 0o666)
	groupw := filepath.Join(dir, "groupw.conf")
	write(t, groupw, "relay = unix:/evil\n", 0o664)
	other := filepath.Join(dir, "other.conf")
	write(t, other, "relay = unix:/evil\n", 0o644)
	otherOwned := os.Chown(other, 4242, 4242) == nil // needs root
	env := func(p string) func(string) string {
		return func(k string) string {
			if k == ConfigEnv {
				return p
			}
			return ""
		}
	}
	c, name, err := LoadConfig(env(good))
	if err != nil || name != good || c.Relay != "unix:/run/r.sock" {
		t.Fatalf("good: %+v %q %v", c, name, err)
	}
	for _, tc := range []struct{ path, want string }{
		{writable, "writable by group or others (mode 0666)"},
		{groupw, "writable by group or others (mode 0664)"},
		{dir, "not a regular file"},
		{filepath.Join(dir, "none"), "no such file"},
	} {
		if _, _, err := LoadConfig(env(tc.path)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.path, err, tc.want)
		}
	}
	if otherOwned && os.Geteuid() != 4242 {
		if _, _, err := LoadConfig(env(other)); err == nil || !strings.Contains(err.Error(), "owned by uid 4242") {
			t.Errorf("another user's config accepted: %v", err)
		}
	} else {
		t.Log("not root: the other-owner case is not exercised")
	}
	// Without the variable, the system path is used.
	if _, name, _ := LoadConfig(env("")); name != DefaultConfigPath {
		t.Errorf("default path %q", name)
	}
}

func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, data string
		mode       os.FileMode
		want, err  string
	}{
		{"ok", "abc123\n", 0o600, "abc123", ""},
		{"group-readable", "  tok  ", 0o640, "tok", ""},
		{"empty", "\n", 0o600, "", "holds 0 bytes"},
		{"world-writable", "tok", 0o602, "", "writable by group or others"},
		{"too long", strings.Repeat("t", 2000), 0o600, "", "larger than"},
	} {
		p := filepath.Join(dir, tc.name)
		write(t, p, tc.data, tc.mode)
		tok, err := ReadToken(&Config{TokenFile: p})
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || string(tok) != tc.want {
			t.Errorf("%s: %q, %v", tc.name, tok, err)
		}
	}
}
