package vm

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"lab/internal/fsutil"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"lab/images"
)

// FileMachine records, beside a machine's disk in its data dir, what the machine owns
// and was made from; lab list, lab delete and lab image prune read it.
const FileMachine = "machine.json"

// FileInstanceTar is the tar of this boot's SSH keys a disk-image guest gets through
// fw_cfg (images.FwCfgInstance), in the state dir.
const FileInstanceTar = "instance.tar"

// Machine is machine.json: a persistent machine (a disk-image guest).
type Machine struct {
	Name     string    `json:"name"`
	Distro   string    `json:"distro"`
	Arch     string    `json:"arch"`
	ImageKey string    `json:"image_key"` // the base image's cache key (images/KEY)
	BaseDisk string    `json:"base_disk"` // the qcow2 the disk is an overlay of
	Disk     string    `json:"disk"`      // the machine's own copy-on-write disk
	Created  time.Time `json:"created"`
}

// ReadMachine reads dataDir/machine.json.
func ReadMachine(dataDir string) (*Machine, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, FileMachine))
	if err != nil {
		return nil, err
	}
	var m Machine
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("vm: %s: %w", filepath.Join(dataDir, FileMachine), err)
	}
	return &m, nil
}

// ensureDisk makes the machine's disk (a qcow2 overlay over the image's base disk) unless
// it exists, and records machine.json. An existing disk is the machine's: it is kept
// whatever image lab would build today, as long as its base image still exists.
func ensureDisk(name, disk string, img *images.Image, progress io.Writer) (*Machine, error) {
	dataDir := filepath.Dir(disk)
	if _, err := os.Stat(disk); err == nil {
		m, err := ReadMachine(dataDir)
		if err != nil {
			return nil, fmt.Errorf("vm: machine %q has a disk %s but no readable %s: %w (lab delete --name %s starts over)", name, disk, FileMachine, err, name)
		}
		if m.Distro != img.Distro {
			return nil, fmt.Errorf("vm: machine %q is a %s machine; it cannot boot the %s image (lab delete --name %s, or choose another --name)", name, m.Distro, img.Distro, name)
		}
		if _, err := os.Stat(m.BaseDisk); err != nil {
			return nil, fmt.Errorf("vm: machine %q's base image %s is gone (%w): its disk cannot be read without it; lab delete --name %s starts over", name, m.BaseDisk, errors.Unwrap(err), name)
		}
		if m.ImageKey != img.Manifest.Key && progress != nil {
			fmt.Fprintf(progress, "lab: %s keeps its disk on image %s (lab would build %s today; lab delete --name %s to start over on it)\n", name, m.ImageKey, img.Manifest.Key, name)
		}
		return m, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("vm: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	tmp := disk + ".tmp"
	out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", img.Disk, tmp).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("vm: creating the machine's disk: qemu-img create: %w: %s", err, strings.TrimSpace(string(out)))
	}
	m := &Machine{Name: name, Distro: img.Distro, Arch: runtime.GOARCH, ImageKey: img.Manifest.Key,
		BaseDisk: img.Disk, Disk: disk, Created: time.Now().UTC().Truncate(time.Second)}
	if err := writeJSON(filepath.Join(dataDir, FileMachine), m); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("vm: %w", err)
	}
	if err := os.Rename(tmp, disk); err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	return m, nil
}

// DiskUse is the space a file takes on the host's disk (allocated blocks, not its
// apparent size: a qcow2 overlay is sparse).
func DiskUse(path string) (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}

// writeInstanceTar writes the tar of this boot's SSH keys that a disk-image guest
// unpacks at boot (lab-instance.service): root's authorized_keys and the OpenSSH host key.
func writeInstanceTar(path string, authorized ssh.PublicKey, hostKey ed25519.PrivateKey) error {
	files, err := images.InstanceFiles(authorized, hostKey)
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		name := strings.TrimPrefix(f.Path, "/")
		if strings.HasPrefix(name, "etc/dropbear") {
			continue // the Debian image runs OpenSSH
		}
		h := &tar.Header{Name: name, Mode: int64(f.Mode.Perm()), Uid: 0, Gid: 0, Uname: "root", Gname: "root", ModTime: time.Unix(0, 0)}
		if f.Mode.IsDir() {
			h.Typeflag, h.Name = tar.TypeDir, name+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("vm: %w", err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			return fmt.Errorf("vm: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	return fsutil.WriteFile(path, buf.Bytes(), 0o600)
}
