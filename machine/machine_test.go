package machine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"lab/formats"
	"lab/images"
	"lab/provision"
	"lab/vm"
)

// stoppedMachine writes the state directory of a machine whose processes are gone, as a
// crashed or killed one leaves it: the instance record and the Wine task's last state.
func stoppedMachine(t *testing.T, shares ...vm.Share) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "m1")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	in := vm.Instance{Name: "m1", StateDir: dir, Accel: "tcg", Vsock: "user", CID: 7, Shares: shares}
	b, _ := json.Marshal(in)
	if err := os.WriteFile(filepath.Join(dir, vm.FileInstance), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Open reads the instance record without touching the VM; a stopped VM opens, and
// what needs the guest says it is not running.
func TestOpen(t *testing.T) {
	dir := stoppedMachine(t)
	m, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Name != "m1" || m.StateDir != dir || m.Instance == nil || m.Instance.CID != 7 {
		t.Errorf("Open = name %q, dir %q, instance %+v", m.Name, m.StateDir, m.Instance)
	}
	_, err = m.Provision(context.Background(), ProvisionOptions{})
	if err == nil || !strings.Contains(err.Error(), "is not up (lab up --name m1)") {
		t.Errorf("Provision of a stopped machine: %v; want vm's 'not up' error", err)
	}
	if _, err := Open("no/such/../../bad name"); err != nil {
		t.Errorf("Open of a path: %v (paths resolve, whether or not a VM is there)", err)
	}
	if _, err := Open("-bad"); err == nil || err.Error() != `vm: invalid VM name "-bad": use 1-32 letters, digits, '-', '_' or '.'` {
		t.Errorf("Open(-bad) = %v", err)
	}
}

// Inspect is one status: the VM's, the Windows side's and the formats', in the JSON
// lab status --json prints (vm.Status's fields at the top level).
func TestInspectStopped(t *testing.T) {
	dir := stoppedMachine(t, WindowsShare("/data/lab/m1/wine"))
	table := []formats.Format{{Name: "labsh", Extension: "labsh", Runner: formats.Runner{Kind: formats.Interpreter, Command: []string{"/bin/sh"}}}}
	b, err := EncodeFormats(table)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, FileFormats), b, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := Inspect(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "stopped" || st.AgentAlive || st.Relay != nil {
		t.Errorf("state %q, agent alive %v, relay %+v; want stopped, no relay", st.State, st.AgentAlive, st.Relay)
	}
	want := WindowsStatus{
		State:  "not kept warm (the hostagent is not running; lab down stops its wineserver)",
		Prefix: "/data/lab/m1/wine",
	}
	if st.PE == nil || *st.PE != want {
		t.Errorf("PE = %+v; want %+v", st.PE, want)
	}
	if len(st.Formats) != 1 || st.Formats[0].Name != "labsh" {
		t.Errorf("Formats = %+v", st.Formats)
	}
	j, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(j, &top); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"name", "state", "cid", "pe", "formats"} {
		if _, ok := top[k]; !ok {
			t.Errorf("lab status --json has no %q: %s", k, j)
		}
	}
	if _, ok := top["relay"]; ok {
		t.Errorf("a stopped machine's status has a relay: %s", j)
	}
	if _, err := Inspect(context.Background(), filepath.Join(t.TempDir(), "none")); !errors.Is(err, vm.ErrNotFound) {
		t.Errorf("Inspect of no machine: %v; want vm.ErrNotFound", err)
	}
}

// Down cleans up after a machine whose processes died: its state directory goes, the
// prefix (absent here) needs no wineserver stopped, and nothing is said.
func TestDownStopped(t *testing.T) {
	dir := stoppedMachine(t, WindowsShare(filepath.Join(t.TempDir(), "wine")))
	var warn bytes.Buffer
	if err := Down(context.Background(), dir, &warn); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir after Down: %v", err)
	}
	if warn.Len() != 0 {
		t.Errorf("Down warned: %q", warn.String())
	}
	if err := Down(context.Background(), dir, &warn); !errors.Is(err, vm.ErrNotFound) {
		t.Errorf("Down again: %v; want vm.ErrNotFound", err)
	}
}

// Up fails before it boots or makes anything when provisioning could not run.
func TestUpNoInterpreter(t *testing.T) {
	t.Setenv("LAB_INTEROP_DIR", t.TempDir())
	dir := filepath.Join(t.TempDir(), "state")
	_, err := Up(context.Background(), Options{VM: vm.Config{Name: "m1", StateDir: dir}, NoWindows: true})
	if err == nil || !strings.HasPrefix(err.Error(), "provision: no interpreter for a ") ||
		!strings.HasSuffix(err.Error(), " (or boot without interop: lab up --no-provision)") {
		t.Fatalf("Up without an interpreter: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Up left %s behind: %v", dir, err)
	}
}

func TestMountsAt(t *testing.T) {
	for _, tc := range []struct {
		shares []vm.Share
		want   bool
	}{
		{nil, false},
		{[]vm.Share{{GuestPath: "/mnt/work"}}, false},
		{[]vm.Share{{GuestPath: "/mnt/lab/"}}, true},
		{[]vm.Share{{GuestPath: "/mnt/work"}, {GuestPath: "/mnt//lab"}}, true},
	} {
		if got := mountsAt(tc.shares, vm.DefaultScratch); got != tc.want {
			t.Errorf("mountsAt(%v) = %v, want %v", tc.shares, got, tc.want)
		}
	}
}

// lab up seeds a disk guest (Debian) with provision.SeedDisk's files under /run/lab/seed,
// where lab's initrd copies them from and the image's lab-instance.service runs apply;
// the initramfs guest gets provision.Seed's boot script.
func TestSeedByDistro(t *testing.T) {
	interp := filepath.Join(t.TempDir(), "lab-interop")
	if err := os.WriteFile(interp, []byte("\x7fELF interpreter"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		disk string
		want string // a file the seed must hold
	}{
		{"", provision.SeedScriptPath},
		{"/data/m1/disk.qcow2", images.DebianSeedApply},
	} {
		dir := stoppedMachine(t)
		in, err := Instance(dir)
		if err != nil {
			t.Fatal(err)
		}
		in.Disk, in.Arch = tc.disk, "amd64"
		files, err := seed(in, ProvisionOptions{Interpreter: interp})
		if err != nil {
			t.Fatalf("disk %q: %v", tc.disk, err)
		}
		var paths []string
		for _, f := range files {
			paths = append(paths, f.Path)
			if tc.disk != "" && !strings.HasPrefix(f.Path, provision.DiskSeedDir+"/") {
				t.Errorf("disk guest's seed file %s is outside %s (lab's initrd copies only that)", f.Path, provision.DiskSeedDir)
			}
		}
		if !slices.Contains(paths, tc.want) {
			t.Errorf("disk %q: seed files %v, want %s among them", tc.disk, paths, tc.want)
		}
	}
	if images.DebianSeedApply != provision.DiskSeedScriptPath {
		t.Errorf("the image runs %s, the seed's script is %s", images.DebianSeedApply, provision.DiskSeedScriptPath)
	}
}
