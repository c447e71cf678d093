package host

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// testConfig builds a config with one share /mnt/host -> a temp dir laid out as
//
//	bin/prog          regular executable
//	bin/link -> prog  symlink inside the share
//	bin/out -> OUTSIDE/secret   symlink leaving the share
//	dir/              a directory
//	dirlink -> OUTSIDE         directory symlink leaving the share
func testConfig(t *testing.T) (*Config, string, string) {
	t.Helper()
	share := t.TempDir()
	outside := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(share, "bin"), 0o755))
	must(os.MkdirAll(filepath.Join(share, "dir", "sub"), 0o755))
	must(os.WriteFile(filepath.Join(share, "bin", "prog"), []byte("#!/bin/true\n"), 0o755))
	must(os.WriteFile(filepath.Join(outside, "secret"), []byte("#!/bin/true\n"), 0o755))
	must(os.Symlink("prog", filepath.Join(share, "bin", "link")))
	must(os.Symlink(filepath.Join(outside, "secret"), filepath.Join(share, "bin", "out")))
	must(os.Symlink(outside, filepath.Join(share, "dirlink")))
	must(os.Symlink("../../etc/passwd", filepath.Join(share, "bin", "rel")))
	c, err := Config{
		Token:       []byte("0123456789abcdef"),
		Shares:      []Share{{HostPath: share, GuestPath: "/mnt/host"}},
		Allow:       []Exposed{{Name: "true", HostPath: "/bin/true"}, {Name: "gone", HostPath: "/nonexistent/x"}},
		FallbackDir: "/",
	}.withDefaults()
	must(err)
	real, _ := filepath.EvalSymlinks(share)
	return &c, real, outside
}

func TestResolveProgram(t *testing.T) {
	c, share, _ := testConfig(t)
	tests := []struct {
		guest   string
		want    string // host path, or "" for an error
		denied  bool
		missing bool
	}{
		{guest: "/mnt/host/bin/prog", want: filepath.Join(share, "bin/prog")},
		{guest: "/mnt/host//bin/./prog", want: filepath.Join(share, "bin/prog")},
		{guest: "/mnt/host/bin/link", want: filepath.Join(share, "bin/prog")},
		{guest: "/mnt/host/bin/out", denied: true},
		{guest: "/mnt/host/bin/rel", denied: true, missing: true}, // escapes (or is missing): never runs
		{guest: "/mnt/host/dirlink/secret", denied: true},
		{guest: "/mnt/host/bin/../bin/prog", denied: true},
		{guest: "/mnt/host/../etc/passwd", denied: true},
		{guest: "/etc/passwd", denied: true},
		{guest: "/mnt/hostile/x", denied: true},
		{guest: "bin/prog", denied: true},
		{guest: "", denied: true},
		{guest: "/mnt/host/bin/prog\x00x", denied: true},
		{guest: "/mnt/host/dir", denied: true},
		{guest: "/mnt/host/bin/prog/", denied: true},
		{guest: "/mnt/host/bin/nothere", missing: true},
	}
	for _, tt := range tests {
		got, err := c.resolveProgram(tt.guest)
		if tt.want != "" {
			if err != nil || got != tt.want {
				t.Errorf("resolveProgram(%q) = %q, %v; want %q", tt.guest, got, err, tt.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("resolveProgram(%q) = %q; want an error", tt.guest, got)
			continue
		}
		var de *DeniedError
		isDenied := errors.As(err, &de)
		isMissing := errors.Is(err, errNotFound)
		if !(tt.denied && isDenied) && !(tt.missing && isMissing) {
			t.Errorf("resolveProgram(%q) error %v: denied=%v missing=%v, want denied=%v missing=%v", tt.guest, err, isDenied, isMissing, tt.denied, tt.missing)
		}
	}
}

func TestResolveExposed(t *testing.T) {
	c, _, _ := testConfig(t)
	if p, err := c.resolveExposed("true"); err != nil || p != "/bin/true" {
		t.Errorf("resolveExposed(true) = %q, %v", p, err)
	}
	var de *DeniedError
	if _, err := c.resolveExposed("sh"); !errors.As(err, &de) {
		t.Errorf("resolveExposed(sh) = %v, want DeniedError", err)
	}
	if _, err := c.resolveExposed("gone"); err == nil {
		t.Error("resolveExposed(gone) succeeded for a missing host program")
	}
}

func TestMapCwd(t *testing.T) {
	c, share, _ := testConfig(t)
	tests := []struct {
		guest, want string
		warn        bool
	}{
		{"/mnt/host", share, false},
		{"/mnt/host/dir/sub", filepath.Join(share, "dir/sub"), false},
		{"/mnt/host/dir/sub/", filepath.Join(share, "dir/sub"), false},
		{"/root", "/", true},
		{"/mnt/host/dirlink", "/", true},
		{"/mnt/host/bin/prog", "/", true},
		{"/mnt/host/nothere", "/", true},
		{"/mnt/host/dir/../dir", "/", true},
		{"", "/", true},
		{"relative", "/", true},
	}
	for _, tt := range tests {
		dir, warn := c.mapCwd(tt.guest)
		if dir != tt.want || (warn != "") != tt.warn {
			t.Errorf("mapCwd(%q) = %q, %q; want %q, warning=%v", tt.guest, dir, warn, tt.want, tt.warn)
		}
		if warn != "" && (strings.Contains(warn, "\n") || !strings.HasPrefix(warn, "lab: warning: ")) {
			t.Errorf("mapCwd(%q) warning %q is not one 'lab: warning:' line", tt.guest, warn)
		}
	}
}

func TestLongestShareWins(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	c, err := Config{Token: make([]byte, 16), Shares: []Share{
		{HostPath: a, GuestPath: "/mnt"},
		{HostPath: b, GuestPath: "/mnt/b"},
	}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := filepath.EvalSymlinks(b)
	ra, _ := filepath.EvalSymlinks(a)
	if got := c.guestToHostPath("/mnt/b/x"); got != filepath.Join(rb, "x") {
		t.Errorf("got %q, want under %q", got, rb)
	}
	if got := c.guestToHostPath("/mnt/bb/x"); got != filepath.Join(ra, "bb/x") {
		t.Errorf("got %q, want under %q", got, ra)
	}
	if got := c.guestToHostPath("/mnt/b/dir/"); got != filepath.Join(rb, "dir")+"/" {
		t.Errorf("trailing slash lost: %q", got)
	}
	if got := c.guestToHostPath("rel/x"); got != "rel/x" {
		t.Errorf("relative path changed: %q", got)
	}
	if got := c.guestToHostPath("/etc/x"); got != "/etc/x" {
		t.Errorf("path outside shares changed: %q", got)
	}
}

func TestConfigValidation(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	os.WriteFile(file, nil, 0o644)
	bad := []Config{
		{Token: []byte("short")},
		{Token: make([]byte, 16), Shares: []Share{{HostPath: "rel", GuestPath: "/g"}}},
		{Token: make([]byte, 16), Shares: []Share{{HostPath: dir, GuestPath: "g"}}},
		{Token: make([]byte, 16), Shares: []Share{{HostPath: file, GuestPath: "/g"}}},
		{Token: make([]byte, 16), Shares: []Share{{HostPath: filepath.Join(dir, "missing"), GuestPath: "/g"}}},
		{Token: make([]byte, 16), Allow: []Exposed{{Name: "a/b", HostPath: "/bin/true"}}},
		{Token: make([]byte, 16), Allow: []Exposed{{Name: "x", HostPath: "true"}}},
		{Token: make([]byte, 16), Allow: []Exposed{{Name: "x", HostPath: "/bin/true"}, {Name: "x", HostPath: "/bin/false"}}},
		{Token: make([]byte, 16), Wine: WineConfig{Prefix: "relative"}},
	}
	for i, c := range bad {
		if _, err := c.withDefaults(); err == nil {
			t.Errorf("config %d: accepted, want an error", i)
		}
	}
}

func TestExposedArgv(t *testing.T) {
	tests := []struct {
		guest, want []string
	}{
		{nil, []string{"ls"}},
		{[]string{"sh"}, []string{"ls"}},
		{[]string{"sh", "-c", "id"}, []string{"ls", "-c", "id"}},
		{[]string{"ls", ""}, []string{"ls", ""}},
	}
	for _, tt := range tests {
		if got := exposedArgv("ls", tt.guest); !slices.Equal(got, tt.want) {
			t.Errorf("exposedArgv(ls, %q) = %q, want %q", tt.guest, got, tt.want)
		}
	}
}

func TestOpenProgram(t *testing.T) {
	c, share, _ := testConfig(t)
	f, real, err := c.openProgram("/mnt/host/bin/link")
	if err != nil || real != filepath.Join(share, "bin", "prog") {
		t.Fatalf("openProgram(link) = %q, %v", real, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	want, _ := os.Stat(real)
	if err != nil || !os.SameFile(fi, want) {
		t.Errorf("openProgram(link) opened %v (%v), not %s", fi, err, real)
	}
	var de *DeniedError
	if _, _, err := c.openProgram("/mnt/host/dir"); !errors.As(err, &de) || de.Reason != "not a regular file" {
		t.Errorf("openProgram(dir) = %v, want a refusal (not a regular file)", err)
	}
}

// TestOpenBeneath: a path that gained a symlink after the check (here: one given as if it
// were resolved) is not opened, with openat2 and with the fallback for older kernels.
func TestOpenBeneath(t *testing.T) {
	_, share, outside := testConfig(t)
	for name, open := range map[string]func(string) (*os.File, error){
		"openat2":  func(p string) (*os.File, error) { return openBeneath(share, p) },
		"fallback": openChecked,
	} {
		f, err := open(filepath.Join(share, "bin", "prog"))
		if err != nil {
			t.Errorf("%s: bin/prog: %v", name, err)
		} else {
			f.Close()
		}
		for _, p := range []string{"bin/link", "bin/out", "dirlink/secret"} {
			if f, err := open(filepath.Join(share, p)); !errors.Is(err, errChanged) {
				if f != nil {
					f.Close()
				}
				t.Errorf("%s: %s: %v, want errChanged", name, p, err)
			}
		}
	}
	if _, err := openBeneath(share, filepath.Join(outside, "secret")); !errors.Is(err, errChanged) {
		t.Errorf("openBeneath outside the root: %v, want errChanged", err)
	}
}
