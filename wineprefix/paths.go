package wineprefix

import (
	"fmt"
	"path/filepath"
	"strings"
)

// WindowsPath is the path a Windows program in the prefix uses for the absolute host path p,
// by the drives of a fresh prefix (dosdevices: c: -> ../drive_c, z: -> /): a path under
// DriveC becomes C:\..., any other Z:\... (Wine's view of the whole host file system).
// It is lexical: symlinks are not resolved.
func (p *Prefix) WindowsPath(hostPath string) (string, error) {
	return windowsPath(p.DriveC(), hostPath)
}

func windowsPath(driveC, hostPath string) (string, error) {
	if !filepath.IsAbs(hostPath) {
		return "", fmt.Errorf("wineprefix: %q is not an absolute path", hostPath)
	}
	hostPath = filepath.Clean(hostPath)
	if rest, ok := under(hostPath, filepath.Clean(driveC)); ok {
		return `C:\` + strings.ReplaceAll(rest, "/", `\`), nil
	}
	return `Z:\` + strings.ReplaceAll(strings.TrimPrefix(hostPath, "/"), "/", `\`), nil
}

// UnixPath is the inverse of WindowsPath for drives C: and Z: (either case, either slash).
func (p *Prefix) UnixPath(winPath string) (string, error) {
	return unixPath(p.DriveC(), winPath)
}

func unixPath(driveC, w string) (string, error) {
	if len(w) < 2 || w[1] != ':' || (len(w) > 2 && w[2] != '\\' && w[2] != '/') {
		return "", fmt.Errorf("wineprefix: %q is not an absolute Windows path", w)
	}
	rest := strings.ReplaceAll(w[2:], `\`, "/")
	// Clean against a root so that C:\..\x stays on drive C.
	rest = filepath.Clean("/" + rest)
	switch w[0] {
	case 'c', 'C':
		return filepath.Join(driveC, rest), nil
	case 'z', 'Z':
		return rest, nil
	}
	return "", fmt.Errorf("wineprefix: %q: drive %c: is not mapped in a lab prefix (only C: and Z:)", w, w[0])
}

// under reports whether p is dir or below it, and the rest of p.
func under(p, dir string) (string, bool) {
	if p == dir {
		return "", true
	}
	if rest, ok := strings.CutPrefix(p, dir+"/"); ok {
		return rest, true
	}
	return "", false
}
