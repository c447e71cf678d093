package vm

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"lab/internal/fsutil"
	"lab/internal/xdg"
)

// Files in a VM's state directory (one directory per VM name). Everything a running
// VM needs or produces lives here; `lab down` removes the directory.
const (
	FileInstance    = "instance.json"    // the Instance record written by Up (argv, ports, CID, modes)
	FileAgentPID    = "ha.pid"           // pid of the supervising `lab hostagent`
	FileAgentLock   = "ha.lock"          // flock held by the live hostagent (a pid alone can be reused)
	fileUpLock      = "up.lock"          // flock held by lab up while it starts the VM
	FileAgentLog    = "ha.log"           // the hostagent's log (slog text) and its stderr
	FileAgentSock   = "ha.sock"          // the hostagent's SSH endpoint: sessions proxied over the kept guest connection
	FileEvents      = "events.jsonl"     // boot progress events the hostagent appends (for humans; Up reads its pipe)
	FileQEMUPID     = "qemu.pid"         // pid of QEMU
	FileQEMULog     = "qemu.log"         // QEMU's own stderr
	FileQEMUExit    = "qemu.exit"        // why QEMU ended, written by the hostagent
	FileQMPSock     = "qmp.sock"         // QMP monitor for lab status / lab down
	FileConsoleLog  = "console.log"      // the guest's serial console
	DirScratch      = "scratch"          // the scratch share (Config.Scratch), if the VM has one
	FileInitrd      = "initrd.cpio"      // base image cpio followed by this VM's instance cpio
	FileVhostSock   = "vhost-vsock.sock" // vhost-user socket of the userspace vsock backend (user mode)
	FileVsockUDS    = "vsock.sock"       // Firecracker-style host side of the userspace vsock ("<path>_<port>")
	FileClientKey   = "id_ed25519"       // client private key (OpenSSH format)
	FileClientPub   = "id_ed25519.pub"   // its public key (authorized in the guest)
	FileHostKey     = "host_ed25519"     // the guest's SSH host key (OpenSSH format), pinned by every client
	FileHostPub     = "host_ed25519.pub" // its public key
	FileKnownHosts  = "known_hosts"      // for the OpenSSH client
	FileSSHConfig   = "ssh_config"       // `ssh -F <dir>/ssh_config lab`
	maxUnixSockPath = 107                // sun_path is 108 bytes including the NUL
)

// StateDirOf resolves a VM name, or a path of a state directory (anything with a
// slash), to its state directory.
func StateDirOf(nameOrDir string) (string, error) {
	if nameOrDir == "" {
		nameOrDir = DefaultName
	}
	if strings.ContainsRune(nameOrDir, '/') {
		return filepath.Abs(nameOrDir)
	}
	if err := validName(nameOrDir); err != nil {
		return "", err
	}
	base, err := xdg.Dir(xdg.State)
	if err != nil {
		return "", fmt.Errorf("vm: %w", err)
	}
	return filepath.Join(base, nameOrDir), nil
}

func validName(name string) error {
	if name == "" || len(name) > 32 || name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("vm: invalid VM name %q: use 1-32 letters, digits, '-', '_' or '.'", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("vm: invalid VM name %q: use 1-32 letters, digits, '-', '_' or '.'", name)
		}
	}
	return nil
}

// Instance is the record Up writes to instance.json before starting the hostagent.
// It holds everything the hostagent needs, so the hostagent imports no image code.
type Instance struct {
	Name        string    `json:"name"`
	StateDir    string    `json:"state_dir"`
	Created     time.Time `json:"created"`
	Accel       string    `json:"accel"`        // the accelerator QEMU runs with: kvm or tcg
	AccelReason string    `json:"accel_reason"` // why (e.g. "auto: KVM trial failed: ...")
	Vsock       string    `json:"vsock"`        // kernel or user
	CID         uint32    `json:"cid"`
	SSHPort     int       `json:"ssh_port"`
	MemoryMiB   int       `json:"memory_mib"`
	CPUs        int       `json:"cpus"`
	Shares      []Share   `json:"shares,omitempty"`
	Arch        string    `json:"arch,omitempty"`  // guest architecture (amd64, arm64); zero in VMs started before arm64 guests: amd64
	Image       string    `json:"image,omitempty"` // the image's cache dir (its name is the image key)
	Kernel      string    `json:"kernel"`
	KernelVer   string    `json:"kernel_version,omitempty"`
	Argv        []string  `json:"argv"` // the full QEMU command line
	BootTimeout Duration  `json:"boot_timeout"`
	Distro      string    `json:"distro,omitempty"` // zero: the initramfs image
	Disk        string    `json:"disk,omitempty"`   // a disk image's machine disk (kept by Down)
	// ConsoleReady is what the guest writes on its serial console once sshd listens
	// (images.Manifest.ConsoleReady); zero: it does not say, the hostagent polls.
	ConsoleReady string `json:"console_ready,omitempty"`
}

// Duration is a time.Duration that reads and writes as "1m30s" in JSON.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// isStateDir reports whether dir is empty or looks like a VM state dir (it has
// instance.json or a hostagent lock): only those may be removed.
func isStateDir(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	if len(entries) == 0 {
		return true
	}
	for _, f := range []string{FileInstance, FileAgentLock} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return true
		}
	}
	return false
}

func readInstance(dir string) (*Instance, error) {
	b, err := os.ReadFile(filepath.Join(dir, FileInstance))
	if err != nil {
		return nil, err
	}
	var in Instance
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("vm: %s: %w", filepath.Join(dir, FileInstance), err)
	}
	return &in, nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFile(path, append(b, '\n'), 0o600)
}

// readPID reads a pid file; 0 when absent or malformed.
func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// processAlive reports whether pid runs and its command line mentions marker (the
// state dir), so a recycled pid is never mistaken for our process. Zombies count as dead.
func processAlive(pid int, marker string) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return false
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if i := strings.LastIndexByte(string(st), ')'); i > 0 && i+2 < len(st) && st[i+2] == 'Z' {
			return false
		}
	}
	return marker == "" || strings.Contains(string(b), marker)
}

// agentAlive reports whether a hostagent holds the state dir's agent lock.
func agentAlive(dir string) bool {
	if _, err := os.Stat(filepath.Join(dir, FileAgentLock)); err != nil {
		return false
	}
	l, err := fsutil.TryLock(filepath.Join(dir, FileAgentLock))
	if errors.Is(err, fsutil.ErrLocked) {
		return true
	}
	if err == nil {
		l.Unlock()
	}
	return false
}

// allocate picks a guest CID (>= 3) and a free loopback port that no other VM under
// base uses. The caller holds base's lock.
func allocate(base, self string) (cid uint32, port int, err error) {
	usedCID := map[uint32]bool{}
	usedPort := map[int]bool{}
	entries, _ := os.ReadDir(base)
	for _, e := range entries {
		dir := filepath.Join(base, e.Name())
		if !e.IsDir() || dir == self {
			continue
		}
		if in, err := readInstance(dir); err == nil {
			usedCID[in.CID] = true
			usedPort[in.SSHPort] = true
		}
	}
	cid = 3
	for usedCID[cid] {
		cid++
	}
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, fmt.Errorf("vm: no free loopback port: %w", err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !usedPort[port] {
			return cid, port, nil
		}
	}
	return 0, 0, errors.New("vm: no free loopback port")
}

// tail returns the last n lines of a file (for error messages).
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const limit = 64 << 10
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-limit, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return ""
	}
	s := strings.TrimRight(strings.ReplaceAll(string(buf), "\r", ""), "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// isStateName reports whether name is one of the state directory's own entries.
func isStateName(name string) bool {
	switch name {
	case FileInstance, FileAgentPID, FileAgentLock, fileUpLock, FileAgentLog, FileAgentSock, FileEvents,
		FileQEMUPID, FileQEMULog, FileQEMUExit, FileQMPSock, FileConsoleLog, DirScratch, FileInitrd,
		FileVhostSock, FileVsockUDS, FileClientKey, FileClientPub, FileHostKey, FileHostPub,
		FileKnownHosts, FileSSHConfig:
		return true
	}
	return false
}
