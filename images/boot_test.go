package images_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"lab/images"
	"lab/internal/labtest"
	"lab/internal/xdg"
)

const qboot = "/usr/share/qemu/qboot.rom"

// vmTools are what booting an image needs (qboot: firmware, a file).
var vmTools = []string{"qemu-system-x86_64", "apt-get", qboot}

// sharedImage builds (or reuses) the image in the user's XDG cache, so
// repeated test runs are fast.
func sharedImage(t testing.TB, server string) *images.Image {
	t.Helper()
	cache, err := xdg.Dir(xdg.Cache)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	img, err := images.Build(ctx, images.Options{CacheDir: cache, SSHServer: server, Progress: labtest.Log(t)})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// guest is one booted QEMU guest.
type guest struct {
	cmd     *exec.Cmd
	exited  chan error
	qmp     net.Conn
	qmpR    *bufio.Reader
	ssh     *ssh.Client
	console string
	ready   time.Duration // QEMU start to first successful SSH session
	banner  time.Duration // QEMU start to the server's first banner
	addr    string
	conf    *ssh.ClientConfig
	dir     string
	client  ed25519.PrivateKey
	hostPub ssh.PublicKey
}

type bootConfig struct {
	shareDir string // mounted at /mnt/share with lab.mount
	rcd      string // an /etc/lab/rc.d script added by the instance cpio
}

// boot starts QEMU the way the boot contract says: vmlinux through PVH and
// qboot, the base initrd followed by an instance cpio, the image's command
// line plus lab.mount, and waits until SSH with the pinned host key works.
func boot(t testing.TB, img *images.Image, cfg bootConfig) *guest {
	t.Helper()
	dir := t.TempDir()
	clientPub, clientPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostPub, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	sshClientPub, _ := ssh.NewPublicKey(clientPub)
	files, err := images.InstanceFiles(sshClientPub, hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.rcd != "" {
		files = append(files, images.File{Path: "/etc/lab/rc.d/50-test", Mode: 0o755, Data: []byte(cfg.rcd)})
	}
	initrd := filepath.Join(dir, "initrd.cpio")
	f, err := os.Create(initrd)
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.Open(img.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, base); err != nil {
		t.Fatal(err)
	}
	base.Close()
	if err := images.WriteCPIO(f, files); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	port := freePort(t)
	qmpSock := filepath.Join(dir, "qmp.sock")
	g := &guest{console: filepath.Join(dir, "console.log"), exited: make(chan error, 1)}
	cmdline := img.Cmdline
	args := []string{
		"-accel", "tcg", "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
		"-serial", "file:" + g.console, "-bios", qboot, "-cpu", "max", "-smp", "2", "-m", "512",
		"-kernel", img.Kernel, "-initrd", initrd, "-no-reboot",
		"-netdev", fmt.Sprintf("user,id=n0,hostfwd=tcp:127.0.0.1:%d-:22", port),
		"-device", "virtio-net-pci,netdev=n0", "-device", "virtio-rng-pci",
		"-qmp", "unix:" + qmpSock + ",server=on,wait=off",
	}
	if cfg.shareDir != "" {
		args = append(args, "-virtfs", "local,path="+cfg.shareDir+",mount_tag=labshare,security_model=none,id=fs0")
		cmdline += " lab.mount=labshare:/mnt/share"
	}
	args = append(args, "-append", cmdline)
	g.cmd = exec.Command("qemu-system-x86_64", args...)
	// No orphaned guest if the test binary dies (a killed `go test`).
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var qemuOut bytes.Buffer
	g.cmd.Stdout, g.cmd.Stderr = &qemuOut, &qemuOut
	start := time.Now()
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.exited <- g.cmd.Wait() }()
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		<-g.exited
		if t.Failed() {
			b, _ := os.ReadFile(g.console)
			t.Logf("qemu output: %s\nguest console:\n%s", qemuOut.String(), b)
		}
	})

	signer, _ := ssh.NewSignerFromKey(clientPriv)
	sshHostPub, _ := ssh.NewPublicKey(hostPub)
	conf := &ssh.ClientConfig{
		User:            "root",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(sshHostPub),
		// Ask only for the pinned key's type (dropbear picks the first
		// type the client lists, even one it has no key for).
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
		Timeout:           10 * time.Second,
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("no SSH on %s after 3 minutes", addr)
		}
		select {
		case err := <-g.exited:
			t.Fatalf("qemu exited before SSH was ready: %v", err)
		default:
		}
		// hostfwd accepts before the guest listens: wait for the banner.
		if bannerReady(addr) {
			if g.banner == 0 {
				g.banner = time.Since(start)
			}
			c, err := ssh.Dial("tcp", addr, conf)
			if err == nil {
				g.ssh = c
				break
			}
			if time.Since(start) > 60*time.Second {
				t.Logf("ssh: %v", err)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	g.ready = time.Since(start)
	g.addr, g.conf = addr, conf
	g.dir, g.client, g.hostPub = dir, clientPriv, sshHostPub
	g.qmp, err = net.Dial("unix", qmpSock)
	if err != nil {
		t.Fatal(err)
	}
	g.qmpR = bufio.NewReader(g.qmp)
	g.qmpR.ReadString('\n') // greeting
	g.qmpCommand(t, "qmp_capabilities")
	return g
}

func bannerReady(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	b := make([]byte, 8)
	n, _ := io.ReadFull(c, b)
	return strings.HasPrefix(string(b[:n]), "SSH-2.0")
}

func (g *guest) qmpCommand(t testing.TB, cmd string) {
	t.Helper()
	fmt.Fprintf(g.qmp, `{"execute": %q}`+"\n", cmd)
	for {
		line, err := g.qmpR.ReadString('\n')
		if err != nil {
			t.Fatalf("qmp %s: %v", cmd, err)
		}
		var m map[string]json.RawMessage
		json.Unmarshal([]byte(line), &m)
		if _, ok := m["return"]; ok {
			return
		}
		if e, ok := m["error"]; ok {
			t.Fatalf("qmp %s: %s", cmd, e)
		}
	}
}

func (g *guest) run(t testing.TB, cmd string) string {
	t.Helper()
	s, err := g.ssh.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	if err != nil {
		t.Fatalf("guest: %s: %v\n%s", cmd, err, out)
	}
	return string(out)
}

// powerdown presses the ACPI power button and waits for QEMU to exit.
func (g *guest) powerdown(t testing.TB) {
	t.Helper()
	g.ssh.Close()
	g.qmpCommand(t, "system_powerdown")
	select {
	case <-g.exited:
		g.exited <- nil // for Cleanup
	case <-time.After(2 * time.Minute):
		t.Fatal("the guest did not power off within 2 minutes of system_powerdown")
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestIntegrationBoot(t *testing.T) {
	labtest.Need(t, vmTools...)
	server := images.DefaultSSHServer
	if s := os.Getenv("LAB_TEST_SSH_SERVER"); s != "" {
		server = s // e.g. LAB_TEST_SSH_SERVER=dropbear to check the other image
	}
	img := sharedImage(t, server)
	share := t.TempDir()
	if err := os.WriteFile(filepath.Join(share, "hello.txt"), []byte("hello from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	g := boot(t, img, bootConfig{shareDir: share, rcd: "#!/bin/sh\necho ran > /run/rcd-test\n"})
	t.Logf("boot to SSH: %.2fs (%s)", g.ready.Seconds(), img.Manifest.SSHServer)

	g.run(t, "true")
	// The host dials when the console says sshd listens (vm's waitReady): the image
	// must say it.
	if m := img.Manifest.ConsoleReady(); m != "" {
		if b, err := os.ReadFile(g.console); err != nil || !strings.Contains(string(b), m) {
			t.Errorf("the console does not say %q once SSH works (%v):\n%s", m, err, b)
		}
	}
	checks := map[string]string{
		"vsock device":        "test -c /dev/vsock && echo ok",
		"binfmt_misc":         "cat /proc/sys/fs/binfmt_misc/status",
		"9p share":            "cat /mnt/share/hello.txt",
		"rc.d script":         "cat /run/rcd-test",
		"hostname":            "hostname",
		"eth0":                "ip -4 addr show eth0 | grep -o 10.0.2.15/24",
		"busybox applets":     "for a in script sha256sum head timeout; do command -v $a >/dev/null || echo missing $a; done; echo ok",
		"socat":               "socat -V | grep -o 'socat version'",
		"binfmt_misc mounted": "grep -c binfmt_misc /proc/mounts",
	}
	want := map[string]string{
		"vsock device": "ok", "binfmt_misc": "enabled", "9p share": "hello from the host",
		"rc.d script": "ran", "hostname": "lab", "eth0": "10.0.2.15/24", "busybox applets": "ok",
		"socat": "socat version", "binfmt_misc mounted": "1",
	}
	for name, cmd := range checks {
		if got := strings.TrimSpace(g.run(t, cmd)); got != want[name] {
			t.Errorf("%s: %q printed %q, want %q", name, cmd, got, want[name])
		}
	}

	// sftp: upload, then read back over SSH.
	sc, err := sftp.NewClient(g.ssh)
	if err != nil {
		t.Fatalf("sftp: %v", err)
	}
	payload := bytes.Repeat([]byte("lab sftp\n"), 10000)
	w, err := sc.Create("/tmp/upload.txt")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(payload); err != nil {
		t.Fatal(err)
	}
	w.Close()
	st, err := sc.Stat("/tmp/upload.txt")
	if err != nil || st.Size() != int64(len(payload)) {
		t.Fatalf("sftp stat: %v, size %v, want %d", err, st, len(payload))
	}
	sc.Close()
	if got := strings.TrimSpace(g.run(t, "wc -c < /tmp/upload.txt")); got != fmt.Sprint(len(payload)) {
		t.Errorf("uploaded file has %s bytes, want %d", got, len(payload))
	}
	// Writing through the 9p share reaches the host.
	g.run(t, "echo from the guest > /mnt/share/back.txt")
	if b, err := os.ReadFile(filepath.Join(share, "back.txt")); err != nil || string(b) != "from the guest\n" {
		t.Errorf("9p write: %q, %v", b, err)
	}

	// The OpenSSH client, with the host key pinned in a known_hosts file.
	if sshPath, err := exec.LookPath("ssh"); err == nil {
		block, err := ssh.MarshalPrivateKey(g.client, "")
		if err != nil {
			t.Fatal(err)
		}
		key := filepath.Join(g.dir, "id_ed25519")
		known := filepath.Join(g.dir, "known_hosts")
		host, port, _ := net.SplitHostPort(g.addr)
		os.WriteFile(key, pem.EncodeToMemory(block), 0o600)
		os.WriteFile(known, []byte(fmt.Sprintf("[%s]:%s %s", host, port, ssh.MarshalAuthorizedKey(g.hostPub))), 0o600)
		out, err := exec.Command(sshPath, "-F", "none", "-i", key, "-p", port,
			"-o", "UserKnownHostsFile="+known, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
			"root@"+host, "echo", "openssh client ok").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "openssh client ok") {
			t.Errorf("OpenSSH client: %v: %s", err, out)
		}
	}

	g.powerdown(t)
	console, _ := os.ReadFile(g.console)
	if bytes.Contains(console, []byte("Kernel panic")) {
		t.Errorf("kernel panic on the console:\n%s", console)
	}
}

// BenchmarkBootToSSH boots the image with each SSH server and reports the
// time from QEMU's start to the first SSH session (TCG here, median of b.N
// boots) and the cost of a new SSH connection with one command.
// Run: go test -run '^$' -bench BootToSSH -benchtime 5x ./images
func BenchmarkBootToSSH(b *testing.B) {
	labtest.Need(b, vmTools...)
	for _, server := range []string{images.Dropbear, images.OpenSSH} {
		b.Run(server, func(b *testing.B) {
			img := sharedImage(b, server)
			b.ResetTimer()
			var ready, banner, conns []float64
			for i := 0; i < b.N; i++ {
				g := boot(b, img, bootConfig{})
				ready = append(ready, g.ready.Seconds())
				banner = append(banner, g.banner.Seconds())
				for j := 0; j < 3; j++ {
					start := time.Now()
					c, err := ssh.Dial("tcp", g.addr, g.conf)
					if err != nil {
						b.Fatal(err)
					}
					s, _ := c.NewSession()
					if err := s.Run("true"); err != nil {
						b.Fatal(err)
					}
					c.Close()
					conns = append(conns, time.Since(start).Seconds())
				}
				g.powerdown(b)
				b.Logf("boot %d: banner at %.2fs, SSH session at %.2fs, new connections %.2f %.2f %.2fs", i, banner[i], ready[i], conns[3*i], conns[3*i+1], conns[3*i+2])
			}
			b.ReportMetric(median(ready), "s-to-ssh")
			b.ReportMetric(median(banner), "s-to-banner")
			b.ReportMetric(median(conns), "s/new-conn")
			b.ReportMetric(float64(img.Manifest.InitrdSize)/1e6, "MB-initrd")
		})
	}
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// BenchmarkBuildCleanCache builds each image into an empty cache dir that
// holds only the already downloaded .debs (hard links), so the figure is a
// clean build without the download: resolving with apt, unpacking the
// kernel package, extracting vmlinux, the closures, the cpio.
// Run: go test -run '^$' -bench BuildCleanCache -benchtime 1x ./images
func BenchmarkBuildCleanCache(b *testing.B) {
	labtest.Need(b, vmTools...)
	for _, server := range []string{images.Dropbear, images.OpenSSH} {
		b.Run(server, func(b *testing.B) {
			img := sharedImage(b, server)
			shared := filepath.Dir(filepath.Dir(img.Dir))
			var secs []float64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				cache := b.TempDir()
				os.MkdirAll(filepath.Join(cache, "debs"), 0o755)
				for _, p := range img.Manifest.Packages {
					m, _ := filepath.Glob(filepath.Join(shared, "debs", p.Name+"_*.deb"))
					for _, f := range m {
						if err := os.Link(f, filepath.Join(cache, "debs", filepath.Base(f))); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.StartTimer()
				start := time.Now()
				got, err := images.Build(context.Background(), images.Options{CacheDir: cache, SSHServer: server})
				if err != nil {
					b.Fatal(err)
				}
				secs = append(secs, time.Since(start).Seconds())
				if got.Manifest.Key != img.Manifest.Key {
					b.Errorf("clean build key %s, shared cache key %s", got.Manifest.Key, img.Manifest.Key)
				}
			}
			b.ReportMetric(median(secs), "s-build")
		})
	}
}
