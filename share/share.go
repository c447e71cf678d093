// Package share is the one type for a host directory the guest sees over 9p, used by every
// layer that knows shares: vm (QEMU's -virtfs and the instance file), provision (the guest's
// mounts and interop.conf), host (the relay's path mapping), guest (interop.conf's share
// lines, labpath/wslpath), labfile (a lab file's shares) and the lab machine (the Windows
// personality's drive_c). Each layer reads the fields it needs and ignores the rest, so a
// share passes between them without copying. It imports only the standard library (nothing
// of lab's, no cgo), so any package may use it, the static guest binary included.
package share

import (
	"path/filepath"
	"strconv"
)

// Share is a host directory exported to the guest over 9p.
type Share struct {
	HostPath  string `json:"host_path"`
	GuestPath string `json:"guest_path"`
	Tag       string `json:"tag,omitempty"` // 9p mount tag; zero: share0, share1, ... by position (Tagged)
	ReadOnly  bool   `json:"read_only,omitempty"`
	// Drive is the Windows drive ("C:", upper case) that shows the share under the Windows
	// personality, for the guest's path translation (labpath, wslpath -w/-m/-u); zero:
	// none. Only the guest's interop.conf carries it (share = GUEST HOST DRIVE).
	Drive string `json:"drive,omitempty"`
}

// The Windows personality: a Wine prefix's drive_c, seen by the guest at /mnt/c as WSL
// mounts C:. The share's tag says which share it is; DriveC and WinePrefix are the only
// places that decode it.
const (
	// DriveCTag is the 9p tag of the drive_c share.
	DriveCTag = "drive_c"
	// DriveCGuest is where the guest sees the prefix's drive_c.
	DriveCGuest = "/mnt/c"
)

// DriveC is the share of the Wine prefix prefixDir's drive_c at /mnt/c (read-write).
func DriveC(prefixDir string) Share {
	return Share{HostPath: filepath.Join(prefixDir, "drive_c"), GuestPath: DriveCGuest, Tag: DriveCTag}
}

// IsDriveC reports whether s is the Windows personality's drive_c share.
func (s Share) IsDriveC() bool { return s.Tag == DriveCTag && s.GuestPath == DriveCGuest }

// WinePrefix returns the Wine prefix whose drive_c is among shares, or "" when there is
// none (no Windows personality).
func WinePrefix(shares []Share) string {
	for _, s := range shares {
		if s.IsDriveC() {
			return filepath.Dir(s.HostPath)
		}
	}
	return ""
}

// Tagged returns a copy of shares with every empty tag filled as QEMU is given it:
// share0, share1, ... by position.
func Tagged(shares []Share) []Share {
	out := make([]Share, len(shares))
	for i, s := range shares {
		if s.Tag == "" {
			s.Tag = "share" + strconv.Itoa(i)
		}
		out[i] = s
	}
	return out
}
