package machine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"lab/internal/xdg"
	"lab/pefixtures"
	"lab/share"
	"lab/vm"
	"lab/wineprefix"
)

// The Windows personality of a VM: a Wine prefix owned by lab whose drive_c the guest
// mounts at /mnt/c, as WSL mounts C: there.
const (
	// DriveCGuest is where the guest sees the prefix's drive_c (share.DriveCGuest).
	DriveCGuest = share.DriveCGuest
	// DriveCTag is the 9p tag of that share (share.DriveCTag).
	DriveCTag = share.DriveCTag
	// DriveLetter is the Windows drive /mnt/c shows.
	DriveLetter = "C:"
	// RequestWineWait waits until the wine task's prefix is warm (or failed) and replies
	// WineState (vm.Client.Call).
	RequestWineWait = "wine.wait"
)

// DataDir is the VM's persistent data directory, which lab down keeps (the Wine prefix,
// C: of the VM, lives there as WSL keeps C:): $XDG_DATA_HOME/lab/NAME or
// ~/.local/share/lab/NAME.
func DataDir(name string) (string, error) {
	d, err := xdg.Dir(xdg.Data)
	if err != nil {
		return "", fmt.Errorf("machine: %w", err)
	}
	return filepath.Join(d, name), nil
}

// SharedWindows is the data directory name of the Windows side all machines share
// (SharedPrefixDir); no machine may be named so.
const SharedWindows = "windows"

// SharedPrefixDir is the Wine prefix every machine uses unless it asks for its own (lab up
// --isolated-windows): one C: per user, as all WSL distributions see the same C:.
// $XDG_DATA_HOME/lab/windows.
func SharedPrefixDir() (string, error) { return DataDir(SharedWindows) }

// PrefixDir is the isolated Wine prefix of the VM named name: DataDir(name)/wine.
func PrefixDir(name string) (string, error) {
	d, err := DataDir(name)
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "wine"), nil
}

// EnsureWindows makes (or finds) the Wine prefix at dir and returns the share that shows
// its drive_c at /mnt/c (read-write), to be added to vm.Config.Shares before vm.Up.
// Without Wine on the host it returns wineprefix.ErrNoWine: callers carry on without
// the Windows personality.
func EnsureWindows(ctx context.Context, dir string, progress io.Writer) (*wineprefix.Prefix, vm.Share, error) {
	p, err := wineprefix.Ensure(ctx, wineprefix.Options{Dir: dir, Progress: progress, Programs: SystemPrograms(ctx, progress)})
	if err != nil {
		return nil, vm.Share{}, err
	}
	return p, WindowsShare(p.Dir), nil
}

// SystemPrograms builds (or takes from the cache) the Windows commands lab adds to a prefix's
// system32 (pefixtures.SystemPrograms: clip.exe, paste.exe, powershell.exe, where.exe, ...). They are Go 1.21
// programs, so the first build needs the Go toolchain and the module proxy; without them the
// prefix works without these commands, and progress gets one line that says so.
func SystemPrograms(ctx context.Context, progress io.Writer) map[string]string {
	built, err := pefixtures.BuildWith(ctx, pefixtures.Options{Progress: progress})
	if err != nil {
		if progress != nil {
			fmt.Fprintf(progress, "lab: the Windows personality has no clip.exe, paste.exe or powershell.exe: %v\n", err)
		}
		return nil
	}
	out := make(map[string]string, len(pefixtures.SystemPrograms))
	for _, n := range pefixtures.SystemPrograms {
		out[n] = built[n]
	}
	return out
}

// WindowsShare is the share of prefix dir's drive_c at /mnt/c.
func WindowsShare(prefixDir string) vm.Share { return share.DriveC(prefixDir) }

// PrefixOf returns the Wine prefix directory of a VM (from its drive_c share), or "" when
// the VM has no Windows personality.
func PrefixOf(in *vm.Instance) string { return share.WinePrefix(in.Shares) }

// WinePhase is what the wine task does with the prefix.
type WinePhase string

const (
	WineWarming WinePhase = "warming"
	WineWarm    WinePhase = "warm"
	WineStopped WinePhase = "stopped"
	WineFailed  WinePhase = "failed"
)

// WineState is the wine task's state (lab status shows it, computed for each request).
type WineState struct {
	State       WinePhase `json:"state"`
	Error       string    `json:"error,omitempty"`
	Prefix      string    `json:"prefix"`
	WineVersion string    `json:"wine_version,omitempty"`
}

// WineStateOf is the wine task's state in a VM's status (nil when the hostagent did
// not answer or the VM has no Windows personality).
func WineStateOf(st *vm.Status) *WineState {
	var w WineState
	if !taskDetail(st, "wine", &w) {
		return nil
	}
	return &w
}

// wineTask holds the state the task reports; settled is closed once warm or failed.
type wineTask struct {
	mu      sync.Mutex
	st      WineState
	settled chan struct{}
}

func (w *wineTask) set(f func(*WineState)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f(&w.st)
	if w.st.State == WineWarm || w.st.State == WineFailed {
		select {
		case <-w.settled:
		default:
			close(w.settled)
		}
	}
}

func (w *wineTask) get() WineState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st
}

// WineTask keeps the VM's Wine prefix warm while the VM runs: Ensure, then a lease on the
// prefix (wineprefix.Prefix.Use: its agent warms it, so the first PE launch neither creates
// the prefix nor has its pipes held by Wine's services), released when the VM stops. The
// wineserver lives in the prefix's agent, not in this hostagent's process tree: machines
// sharing the prefix keep it when this one goes down, and the agent stops it when the last
// lease is gone. A VM without the drive_c share (no Wine, or --no-windows) makes it return
// at once. It reports its
// WineState and answers RequestWineWait.
func WineTask() vm.Task { return vm.Task{Name: "wine", Run: runWine} }

func runWine(ctx context.Context, env *vm.Env) error {
	in, err := Instance(env.StateDir)
	if err != nil {
		return err
	}
	dir := PrefixOf(in)
	if dir == "" {
		return nil
	}
	w := &wineTask{st: WineState{State: WineWarming, Prefix: dir}, settled: make(chan struct{})}
	env.Report(func(context.Context) any { return w.get() })
	env.Handle(RequestWineWait, func(ctx context.Context, _ json.RawMessage) (any, error) {
		select {
		case <-w.settled:
			return w.get(), nil
		case <-ctx.Done():
			return nil, fmt.Errorf("machine: the VM's Wine prefix is not warm yet: %w", ctx.Err())
		}
	})
	var lease *wineprefix.Lease
	p, err := wineprefix.Ensure(ctx, wineprefix.Options{Dir: dir, Programs: SystemPrograms(ctx, nil)})
	if err == nil {
		w.set(func(st *WineState) { st.WineVersion = p.WineVersion })
		lease, err = p.Use(ctx)
	}
	if err != nil {
		w.set(func(st *WineState) { st.State, st.Error = WineFailed, err.Error() })
		return fmt.Errorf("machine: wine prefix: %w", err)
	}
	w.set(func(st *WineState) { st.State = WineWarm })
	env.Logger.Info("wine prefix warm", "prefix", dir, "wine", p.WineVersion)
	<-ctx.Done()
	err = lease.Release()
	w.set(func(st *WineState) {
		st.State, st.Error = WineStopped, ""
		if err != nil {
			st.Error = err.Error()
		}
	})
	return err
}

// ShutdownWindows waits until the wineserver of the VM's prefix is stopped when no other
// machine uses the prefix (lab down calls it after the VM is down; the prefix's agent stops
// the server once the last machine is gone, and what a killed agent left is stopped here).
// A prefix another running machine uses is left alone. It is a no-op for a VM without the
// Windows personality or a host without Wine.
func ShutdownWindows(ctx context.Context, prefixDir string) error {
	if prefixDir == "" {
		return nil
	}
	if _, err := os.Stat(prefixDir); err != nil {
		return nil
	}
	p, err := wineprefix.Ensure(ctx, wineprefix.Options{Dir: prefixDir})
	if errors.Is(err, wineprefix.ErrNoWine) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := p.StopUnused(ctx); err != nil && !errors.Is(err, wineprefix.ErrInUse) {
		return err
	}
	return nil
}
