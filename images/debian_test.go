package images

import (
	"os"
	"os/exec"
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

// TestDebianExtractHook runs the extract hook on a directory: dpkg's path filters and
// the build-only unsafe-io land in the image's dpkg.cfg.d, not in mmdebstrap's own
// dpkg options (those send every essential package through its Python tarfilter).
func TestDebianExtractHook(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc/dpkg/dpkg.cfg.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A file that the unquoted patterns would match if the shell expanded them.
	if err := os.MkdirAll(filepath.Join(root, "usr/share/man"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", "-c", debianExtractHook(), "hook", root).CombinedOutput(); err != nil {
		t.Fatalf("extract hook: %v: %s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(root, "etc/dpkg/dpkg.cfg.d/lab-excludes"))
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Join(debianDpkgExcludes, "\n") + "\n"; string(got) != want {
		t.Errorf("lab-excludes:\n%s\nwant:\n%s", got, want)
	}
	if got, err := os.ReadFile(filepath.Join(root, "etc/dpkg/dpkg.cfg.d/lab-build")); err != nil || string(got) != "force-unsafe-io\n" {
		t.Errorf("lab-build = %q, %v", got, err)
	}
	for _, a := range mmdebstrapArgs("root", "/debs", "/tmp/x", "/tmp/x/root", "/tmp/x/sources.list") {
		if strings.HasPrefix(a, "--dpkgopt=path-") {
			t.Errorf("mmdebstrap argument %q: path filters as --dpkgopt make mmdebstrap run its tarfilter on every package", a)
		}
		if strings.Contains(a, "initramfs-tools") {
			t.Errorf("mmdebstrap argument %q installs initramfs-tools", a)
		}
	}
}

// TestInitrdPackage builds the package that stands in for initramfs-tools with the
// real dpkg-deb: it must provide linux-initramfs-tool, which linux-image-* depends on.
func TestInitrdPackage(t *testing.T) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("no dpkg-deb")
	}
	tmp := t.TempDir()
	if err := buildInitrdPackage(t.Context(), tmp); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("dpkg-deb", "-f", filepath.Join(tmp, "lab-initrd.deb"), "Package", "Provides").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(out); got != "Package: lab-initrd\nProvides: linux-initramfs-tool\n" {
		t.Errorf("dpkg-deb -f = %q", got)
	}
	if _, err := os.Stat(filepath.Join(tmp, "lab-initrd-pkg")); !os.IsNotExist(err) {
		t.Errorf("the package's build dir is left behind: %v", err)
	}
}

// TestDebianBootWaitsForNothing checks what keeps systemd from waiting on udev at
// boot: an fstab entry for / made it wait for dev-vda.device (34 s under TCG), and
// modules left to systemd-modules-load or udev's coldplug cost 19 s and 14 s.
func TestDebianBootWaitsForNothing(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	var fstabLine string
	for _, l := range strings.Split(debianCustomize, "\n") {
		if strings.Contains(l, `"$R/etc/fstab"`) {
			fstabLine = l
		}
	}
	if fstabLine == "" {
		t.Fatal("the customize hook does not write /etc/fstab")
	}
	if out, err := exec.Command("sh", "-c", "R=$1; "+fstabLine, "hook", root).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", fstabLine, err, out)
	}
	fstab, err := os.ReadFile(filepath.Join(root, "etc/fstab"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(fstab), "\n") {
		if f := strings.Fields(l); len(f) > 1 && !strings.HasPrefix(f[0], "#") && f[1] == "/" {
			t.Errorf("fstab has an entry for / (systemd waits for its device): %q", l)
		}
	}
	for n := range debianFiles {
		if strings.HasPrefix(n, "etc/modules-load.d/") {
			t.Errorf("%s leaves modules to systemd-modules-load; lab's initrd loads them", n)
		}
	}
	// What the machine uses: NIC, vsock (interop), 9p (shares), binfmt_misc, fw_cfg
	// (lab-instance), the power button for logind.
	for _, m := range []string{"virtio_net", "vmw_vsock_virtio_transport", "9pnet_virtio", "9p", "binfmt_misc", "qemu_fw_cfg", "button", "evdev"} {
		if !contains(debianInitrdModules, m) {
			t.Errorf("lab's initrd does not load %s", m)
		}
	}
	for _, u := range []string{"systemd-modules-load.service", "systemd-journal-flush.service", "systemd-update-utmp.service"} {
		if !strings.Contains(debianCustomize, u) {
			t.Errorf("the customize hook does not mask %s", u)
		}
	}
	trig := debianFiles["etc/systemd/system/systemd-udev-trigger.service.d/lab.conf"]
	if !strings.Contains(trig, "ExecStart=\n") || !strings.Contains(trig, "--subsystem-match=input") {
		t.Errorf("udev's coldplug is not limited to input devices:\n%s", trig)
	}
}

// The provisioning seed lab's initrd copies to /run/lab/seed is applied by
// lab-instance.service before systemd-binfmt registers the seeded lab.conf and before
// sshd reads the seeded SetEnv line.
func TestDebianSeedApplied(t *testing.T) {
	if !strings.Contains(debianInit, "/run/lab/seed") || !strings.Contains(debianInit, "tmpfs /root/run") {
		t.Errorf("lab's /init does not copy the seed onto the root's /run:\n%s", debianInit)
	}
	// Only where the disk's lab-instance applies it (a disk of an older image would keep
	// the unapplied archive in memory): /init looks for the apply path in that script.
	if !strings.Contains(debianInit, "grep -q "+DebianSeedApply[:len("/run/lab/seed")]+" /root/usr/local/lib/lab/instance") {
		t.Errorf("lab's /init copies the seed whatever the disk's lab-instance does:\n%s", debianInit)
	}
	if !strings.Contains(debianFiles["usr/local/lib/lab/instance"], "s="+DebianSeedApply+"\n") {
		t.Errorf("lab-instance does not run %s", DebianSeedApply)
	}
	var before []string
	for _, l := range strings.Split(debianFiles["etc/systemd/system/lab-instance.service"], "\n") {
		if v, ok := strings.CutPrefix(l, "Before="); ok {
			before = append(before, strings.Fields(v)...)
		}
	}
	for _, u := range []string{"systemd-binfmt.service", "ssh.service"} {
		if !contains(before, u) {
			t.Errorf("lab-instance.service is not ordered before %s (Before=%v)", u, before)
		}
	}
}
