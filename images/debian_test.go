package images

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDebianSourcesParsing(t *testing.T) {
	deb822 := `# a comment
Types: deb deb-src
# between fields
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Enabled: no

Types: deb-src
URIs: http://mirror.example/debian
Suites: bookworm
Components: main
`
	got := parseDeb822Sources([]byte(deb822))
	want := []string{
		"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm main contrib",
		"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm-updates main contrib",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("deb822:\n got %q\nwant %q", got, want)
	}
	oneLine := "deb http://mirror.example/debian bookworm main # trailing\n# deb http://old bookworm main\ndeb-src http://mirror.example/debian bookworm main\ndeb [arch=amd64] http://other.example/repo stable main\n"
	got = parseOneLineSources([]byte(oneLine))
	want = []string{"deb http://mirror.example/debian bookworm main", "deb [arch=amd64] http://other.example/repo stable main"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("one-line:\n got %q\nwant %q", got, want)
	}
	for line, suite := range map[string]string{
		"deb http://m/debian bookworm main":                                      "bookworm",
		"deb [arch=amd64 signed-by=/k.gpg] http://m/debian x main":               "x",
		"deb [signed-by=/k.gpg] http://m/debian-security bookworm-security main": "bookworm-security",
		"deb http://m": "",
	} {
		if got := sourceSuite(line); got != suite {
			t.Errorf("sourceSuite(%q) = %q, want %q", line, got, suite)
		}
	}
}

func TestInstalledPackages(t *testing.T) {
	status := `Package: systemd
Status: install ok installed
Architecture: amd64
Version: 252.36-1~deb12u1

Package: linux-image-6.1.0-57-amd64
Status: install ok installed
Architecture: amd64
Version: 6.1.158-1

Package: linux-image-amd64
Status: install ok installed
Architecture: amd64
Version: 6.1.158-1

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1
`
	pkgs, kver := installedPackages([]byte(status))
	if kver != "6.1.0-57-amd64" {
		t.Errorf("kernel version %q, want 6.1.0-57-amd64", kver)
	}
	var names []string
	for _, p := range pkgs {
		names = append(names, p.Name)
	}
	if got := strings.Join(names, " "); got != "linux-image-6.1.0-57-amd64 linux-image-amd64 systemd" {
		t.Errorf("packages %q", got)
	}
}

// TestDebianKeyChanges: the key follows the sources and lab's files.
func TestDebianKeyChanges(t *testing.T) {
	a := debianKey("deb http://m/debian bookworm main\n")
	if a != debianKey("deb http://m/debian bookworm main\n") {
		t.Fatal("key is not stable")
	}
	if !strings.HasPrefix(a, "debian-") {
		t.Errorf("key %q does not start with debian-", a)
	}
	if a == debianKey("deb http://other/debian bookworm main\n") {
		t.Error("key ignores the sources")
	}
	old := debianFiles["etc/sudoers.d/lab"]
	debianFiles["etc/sudoers.d/lab"] = old + "# changed\n"
	defer func() { debianFiles["etc/sudoers.d/lab"] = old }()
	if a == debianKey("deb http://m/debian bookworm main\n") {
		t.Error("key ignores lab's files in the image")
	}
}

func TestLoadDebianRefusesOtherImages(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(`{"recipe":"x","key":"k"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := loadDebian(dir)
	if err == nil || err.Error() != dir+": not a Debian image" {
		t.Fatalf("loadDebian = %v, want %q", err, dir+": not a Debian image")
	}
}

func TestBuildUnknownDistro(t *testing.T) {
	_, err := Build(t.Context(), Options{Distro: "arch", CacheDir: t.TempDir()})
	if err == nil || err.Error() != `images: unknown distro "arch" (want initramfs or debian)` {
		t.Fatalf("Build = %v", err)
	}
}
