package images

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// File is one entry of a guest initramfs.
type File struct {
	Path     string      // absolute path in the guest, e.g. "/etc/inittab"
	Mode     fs.FileMode // permission bits plus fs.ModeDir, fs.ModeSymlink or fs.ModeDevice|fs.ModeCharDevice
	Data     []byte      // contents of a regular file
	Linkname string      // target of a symlink
	// Major and Minor are the device numbers of a device node.
	Major, Minor uint32
}

// unixMode converts an fs.FileMode to the st_mode bits stored in a newc header.
func unixMode(m fs.FileMode) (uint32, error) {
	mode := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	switch {
	case m&fs.ModeDir != 0:
		mode |= 0o040000
	case m&fs.ModeSymlink != 0:
		mode |= 0o120000
	case m&fs.ModeCharDevice != 0:
		mode |= 0o020000
	case m&fs.ModeDevice != 0:
		mode |= 0o060000
	case m&fs.ModeNamedPipe != 0:
		mode |= 0o010000
	case m.IsRegular():
		mode |= 0o100000
	default:
		return 0, fmt.Errorf("unsupported file mode %v", m)
	}
	return mode, nil
}

// cleanPath turns a guest path into the relative form the kernel's
// initramfs unpacker expects ("etc/inittab"); "" means the root.
func cleanPath(p string) string {
	return strings.TrimPrefix(path.Clean("/"+p), "/")
}

// WriteCPIO writes files as one newc ("070701") cpio archive, the format
// the kernel unpacks as an initramfs. Every entry is owned by uid/gid 0 and
// dated 0 so the same files give the same bytes. Parent directories missing
// from files are created (mode 0755) before their first child. Later
// entries with the same path override earlier ones when the kernel unpacks
// them, so an archive may be appended to another.
func WriteCPIO(w io.Writer, files []File) error {
	if err := writeCPIO(w, files); err != nil {
		return fmt.Errorf("images: %w", err)
	}
	return nil
}

// writeCPIO is WriteCPIO without the "images: " prefix, for the builds, whose
// exported callers add it.
func writeCPIO(w io.Writer, files []File) error {
	cw := &cpioWriter{w: bufio.NewWriterSize(w, 1<<20), dirs: map[string]bool{"": true}}
	for _, f := range files {
		if err := cw.add(f); err != nil {
			return fmt.Errorf("cpio: %s: %w", f.Path, err)
		}
	}
	if err := cw.entry("TRAILER!!!", 0, 0, 0, 0, nil); err != nil {
		return fmt.Errorf("cpio: %w", err)
	}
	if err := cw.w.Flush(); err != nil {
		return fmt.Errorf("cpio: %w", err)
	}
	return nil
}

type cpioWriter struct {
	w    *bufio.Writer
	ino  uint32
	dirs map[string]bool // directories already written (cleaned paths)
}

func (cw *cpioWriter) add(f File) error {
	name := cleanPath(f.Path)
	if name == "" {
		return nil // the root always exists
	}
	if err := cw.parents(path.Dir(name)); err != nil {
		return err
	}
	mode, err := unixMode(f.Mode)
	if err != nil {
		return err
	}
	var data []byte
	nlink := uint32(1)
	switch {
	case f.Mode.IsDir():
		cw.dirs[name] = true
		nlink = 2
	case f.Mode&fs.ModeSymlink != 0:
		if f.Linkname == "" {
			return fmt.Errorf("symlink without a target")
		}
		data = []byte(f.Linkname)
	case f.Mode.IsRegular():
		data = f.Data
	}
	var rdev [2]uint32
	if f.Mode&fs.ModeDevice != 0 {
		rdev = [2]uint32{f.Major, f.Minor}
	}
	return cw.entry(name, mode, nlink, rdev[0], rdev[1], data)
}

// parents writes the directories leading to dir that were not written yet.
func (cw *cpioWriter) parents(dir string) error {
	if dir == "." || dir == "" || cw.dirs[dir] {
		return nil
	}
	if err := cw.parents(path.Dir(dir)); err != nil {
		return err
	}
	cw.dirs[dir] = true
	return cw.entry(dir, 0o040755, 2, 0, 0, nil)
}

var zeros [4]byte

func pad4(n int) int { return (4 - n%4) % 4 }

func (cw *cpioWriter) entry(name string, mode, nlink, rmajor, rminor uint32, data []byte) error {
	cw.ino++
	ino := cw.ino
	if name == "TRAILER!!!" {
		ino = 0
	}
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize, check
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	if _, err := cw.w.WriteString(hdr); err != nil {
		return err
	}
	cw.w.WriteString(name)
	cw.w.WriteByte(0)
	cw.w.Write(zeros[:pad4(len(hdr)+len(name)+1)])
	cw.w.Write(data)
	_, err := cw.w.Write(zeros[:pad4(len(data))])
	return err
}

// sortFiles orders files by path so that archives are reproducible and
// directories come before their contents.
func sortFiles(files []File) {
	sort.SliceStable(files, func(i, j int) bool { return cleanPath(files[i].Path) < cleanPath(files[j].Path) })
}
