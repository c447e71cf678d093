package machine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"lab/vm"
	"lab/wineprefix"
)

// What a machine owns outside its state dir, in its data dir ($XDG_DATA_HOME/lab/NAME).
const (
	dataPrefix        = "wine"         // an isolated Wine prefix (lab up --isolated-windows)
	dataDisk          = "disk.qcow2"   // a persistent disk overlay
	FileMachineRecord = "machine.json" // the machine's record, kept across lab down
)

// Entry is one line of lab list: a machine that runs or that lab down kept.
type Entry struct {
	Name string `json:"name"`
	// State is the VM's state while it has a state dir (running, booting, broken,
	// stopping, stopped) or "kept" once lab down removed it and only its data is left.
	State   string `json:"state"`
	Windows string `json:"windows"` // "shared", "isolated", "none" or "" (not known while kept)
	// Prefix is the machine's own Wine prefix (isolated), PrefixBytes its disk use.
	Prefix      string `json:"prefix,omitempty"`
	PrefixBytes int64  `json:"prefix_bytes,omitempty"`
	Disk        string `json:"disk,omitempty"`
	DiskBytes   int64  `json:"disk_bytes,omitempty"`
	StateDir    string `json:"state_dir,omitempty"`
	StateBytes  int64  `json:"state_bytes,omitempty"`
	DataDir     string `json:"data_dir,omitempty"`
	DataBytes   int64  `json:"data_bytes,omitempty"` // everything in DataDir
	running     bool
}

// Running says whether the machine's hostagent or QEMU runs.
func (e Entry) Running() bool { return e.running }

// SharedWindowsInfo is the Windows side all machines share.
type SharedWindowsInfo struct {
	Prefix string `json:"prefix"`
	Bytes  int64  `json:"bytes"`
	Users  int    `json:"users"` // running machines that use it
	Server bool   `json:"server"`
}

// Inventory is what lab list shows.
type Inventory struct {
	Machines []Entry            `json:"machines"`
	Windows  *SharedWindowsInfo `json:"windows,omitempty"`
}

// Machines finds every machine: state dirs (running or not cleaned up) and data dirs
// that lab down kept, with their disk use.
func Machines(ctx context.Context) (*Inventory, error) {
	sts, err := vm.List(ctx)
	if err != nil {
		return nil, err
	}
	shared, err := SharedPrefixDir()
	if err != nil {
		return nil, err
	}
	byName := map[string]*Entry{}
	list := &Inventory{}
	users := 0
	for _, st := range sts {
		m := &Entry{Name: st.Name, State: string(st.State), StateDir: st.StateDir, Windows: "none"}
		m.running = st.AgentAlive || st.QEMUAlive
		m.StateBytes = DiskUse(st.StateDir)
		if in, err := Instance(st.StateDir); err == nil {
			switch p := PrefixOf(in); {
			case p == "":
			case filepath.Clean(p) == filepath.Clean(shared):
				m.Windows = "shared"
				if m.running {
					users++
				}
			default:
				m.Windows, m.Prefix = "isolated", p
			}
		}
		byName[st.Name] = m
	}
	base, err := DataDir("")
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(base)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, e := range ents {
		if _, err := vm.StateDirOf(e.Name()); !e.IsDir() || e.Name() == SharedWindows || err != nil {
			continue
		}
		m := byName[e.Name()]
		if m == nil {
			m = &Entry{Name: e.Name(), State: "kept"}
			byName[e.Name()] = m
		}
		m.DataDir = filepath.Join(base, e.Name())
		m.DataBytes = DiskUse(m.DataDir)
		if p := filepath.Join(m.DataDir, dataPrefix); m.Prefix == "" && isDir(p) {
			m.Prefix = p
			if m.State == "kept" {
				m.Windows = "isolated"
			}
		}
		if d := filepath.Join(m.DataDir, dataDisk); isFile(d) {
			m.Disk, m.DiskBytes = d, DiskUse(d)
		}
	}
	for _, m := range byName {
		if m.Prefix != "" {
			m.PrefixBytes = DiskUse(m.Prefix)
		}
		list.Machines = append(list.Machines, *m)
	}
	sort.Slice(list.Machines, func(i, j int) bool { return list.Machines[i].Name < list.Machines[j].Name })
	if isDir(shared) {
		list.Windows = &SharedWindowsInfo{Prefix: shared, Bytes: DiskUse(shared), Users: users, Server: wineprefix.AgentRunning(shared)}
	}
	return list, nil
}

// Delete removes everything the machine owns: its state dir (stopping it first
// when force is set), its isolated Wine prefix and its data dir. It returns the bytes freed.
func Delete(ctx context.Context, name string, force bool, errOut io.Writer) (int64, error) {
	if name == SharedWindows {
		return 0, &UsageError{fmt.Errorf("delete: %q is the Windows side all machines share, not a machine (lab image prune does not touch it; remove $XDG_DATA_HOME/lab/%s by hand when no machine runs)", name, name)}
	}
	if strings.ContainsRune(name, '/') {
		return 0, &UsageError{fmt.Errorf("delete: %q: give a machine's name, not a path", name)}
	}
	stateDir, err := vm.StateDirOf(name)
	if err != nil {
		return 0, &UsageError{fmt.Errorf("delete: %w", err)}
	}
	dataDir, err := DataDir(name)
	if err != nil {
		return 0, err
	}
	hasState, hasData := isDir(stateDir), isDir(dataDir)
	if !hasState && !hasData {
		return 0, fmt.Errorf("delete: no machine named %q (lab list shows every machine)", name)
	}
	freed := DiskUse(stateDir) + DiskUse(dataDir)
	if hasState {
		st, err := vm.Inspect(ctx, stateDir)
		if err != nil {
			return 0, err
		}
		if (st.AgentAlive || st.QEMUAlive) && !force {
			return 0, fmt.Errorf("delete: machine %q is %s: stop it first (lab down --name %s) or use lab delete --force %s", name, st.State, name, name)
		}
		if err := Down(ctx, name, errOut); err != nil {
			return 0, fmt.Errorf("delete: %w", err)
		}
	}
	if prefix := filepath.Join(dataDir, dataPrefix); isDir(prefix) {
		if loader, server, err := wineprefix.Find(wineprefix.Options{}); err == nil {
			p := &wineprefix.Prefix{Dir: prefix, Loader: loader, Server: server}
			if err := p.StopUnused(ctx); err != nil {
				return 0, fmt.Errorf("delete: the Wine prefix %s: %w", prefix, err)
			}
		}
	}
	if err := os.RemoveAll(dataDir); err != nil {
		return 0, fmt.Errorf("delete: %w", err)
	}
	return freed, nil
}

// DiskUse is the space path takes on disk (allocated blocks, hard links counted once);
// 0 when it does not exist.
func DiskUse(path string) int64 {
	var n int64
	seen := map[[2]uint64]bool{}
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			k := [2]uint64{uint64(st.Dev), st.Ino}
			if !seen[k] {
				seen[k] = true
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// UsageError is Delete's error for a name that cannot be a machine's (the command
// line's mistake, not the machine's state): lab exits 2 on it.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }
