package labvm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"lab/internal/fsutil"
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
	// FileWineState is the wine task's published state in the VM's state dir (lab status).
	FileWineState = "wine.json"
)

// DataDir is the VM's persistent data directory, which lab down keeps (the Wine prefix,
// C: of the VM, lives there as WSL keeps C:): $XDG_DATA_HOME/lab/NAME or
// ~/.local/share/lab/NAME.
func DataDir(name string) (string, error) {
	d, err := xdg.Dir(xdg.Data)
	if err != nil {
		return "", fmt.Errorf("labvm: %w", err)
	}
	return filepath.Join(d, name), nil
}

// PrefixDir is the Wine prefix of the VM named name: DataDir(name)/wine.
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

// WineState is what the wine task publishes for lab status.
type WineState struct {
	State       string    `json:"state"` // "warming", "warm", "stopped", "failed"
	Error       string    `json:"error,omitempty"`
	Prefix      string    `json:"prefix"`
	WineVersion string    `json:"wine_version,omitempty"`
	Updated     time.Time `json:"updated"`
}

// ReadWineState reads the wine task's published state.
func ReadWineState(stateDir string) (*WineState, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, FileWineState))
	if err != nil {
		return nil, err
	}
	var st WineState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("labvm: %s: %w", FileWineState, err)
	}
	return &st, nil
}

func writeWineState(stateDir string, st WineState) {
	st.Updated = time.Now()
	b, _ := json.MarshalIndent(st, "", "  ")
	p := filepath.Join(stateDir, FileWineState)
	fsutil.WriteFile(p, append(b, '\n'), 0o644)
}

// WineTask keeps the VM's Wine prefix warm while the VM runs: Ensure + Warm at start
// (so the first PE launch neither creates the prefix nor has its pipes held by Wine's
// services), Shutdown (wineserver -k) when the VM stops. A VM without the drive_c share
// (no Wine, or --no-windows) makes it return at once.
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
	st := WineState{State: "warming", Prefix: dir}
	writeWineState(env.StateDir, st)
	p, err := wineprefix.Ensure(ctx, wineprefix.Options{Dir: dir, Programs: SystemPrograms(ctx, nil)})
	if err == nil {
		// The persistent wineserver and Wine's services die with the hostagent.
		p.Prepare = env.Procs.Prepare
		st.WineVersion = p.WineVersion
		err = p.Warm(ctx)
	}
	if err != nil {
		st.State, st.Error = "failed", err.Error()
		writeWineState(env.StateDir, st)
		return fmt.Errorf("labvm: wine prefix: %w", err)
	}
	st.State = "warm"
	writeWineState(env.StateDir, st)
	env.Logger.Info("wine prefix warm", "prefix", dir, "wine", p.WineVersion)
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 4*time.Second)
	defer cancel()
	err = p.Shutdown(sctx)
	st.State, st.Error = "stopped", ""
	if err != nil {
		st.Error = err.Error()
	}
	writeWineState(env.StateDir, st)
	return err
}

// ShutdownWindows stops the wineserver of the VM's prefix (lab down calls it after the
// VM is down: a hostagent that was killed never ran the wine task's Shutdown). It is a
// no-op for a VM without the Windows personality or a host without Wine.
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
	return p.Shutdown(ctx)
}
