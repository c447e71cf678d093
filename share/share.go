// Package share is the one type for a host directory the guest sees over 9p, used by every
// layer that knows shares: vm (QEMU's -virtfs and the instance file), provision (the guest's
// mounts and interop.conf), host (the relay's path mapping) and the lab machine (the Windows
// personality's drive_c). It imports nothing of lab's, so any package may use it.
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
