package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"lab/internal/labtest"
	"lab/machine"
	"lab/vm"
)

// fakeMachine writes a state dir as vm.Up leaves it (instance.json); running holds its
// hostagent lock as a live hostagent does.
func fakeMachine(t *testing.T, stateBase, name string, shares []vm.Share, running bool) {
	t.Helper()
	dir := filepath.Join(stateBase, name)
	b, _ := json.Marshal(vm.Instance{Name: name, StateDir: dir, Shares: shares})
	labtest.WriteSized(t, filepath.Join(dir, vm.FileInstance), 0)
	if err := os.WriteFile(filepath.Join(dir, vm.FileInstance), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if !running {
		return
	}
	f, err := os.OpenFile(filepath.Join(dir, vm.FileAgentLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
}

func TestListAndDeleteMachines(t *testing.T) {
	stateBase, dataBase, _ := labtest.TempXDG(t)
	l, err := machine.Machines(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	printMachines(&out, l)
	if len(l.Machines) != 0 || l.Windows != nil || out.String() != "no machines (lab up makes one)\n" {
		t.Fatalf("empty: %+v, printed %q", l, out.String())
	}

	shared := filepath.Join(dataBase, "windows")
	labtest.WriteSized(t, filepath.Join(shared, "drive_c", "x"), 5000)
	fakeMachine(t, stateBase, "run1", []vm.Share{machine.WindowsShare(shared)}, true)
	fakeMachine(t, stateBase, "crashed", nil, false)
	labtest.WriteSized(t, filepath.Join(dataBase, "kept1", "wine", "drive_c", "f"), 100000)
	labtest.WriteSized(t, filepath.Join(dataBase, "kept1", "disk.qcow2"), 70000)
	labtest.WriteSized(t, filepath.Join(dataBase, "kept1", "machine.json"), 10)
	labtest.WriteSized(t, filepath.Join(dataBase, ".wine.tmp-1", "f"), 10) // not a machine's name

	l, err = machine.Machines(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]machine.Entry{}
	var names []string
	for _, m := range l.Machines {
		got[m.Name] = m
		names = append(names, m.Name)
	}
	if strings.Join(names, " ") != "crashed kept1 run1" {
		t.Fatalf("machines %q, want crashed kept1 run1", names)
	}
	if m := got["run1"]; m.State != "stopping" || m.Windows != "shared" || m.Prefix != "" || !m.Running() {
		t.Errorf("run1 = %+v, want a running machine (hostagent lock held) on the shared prefix", m)
	}
	if m := got["crashed"]; m.State != "stopped" || m.Windows != "none" || m.Running() {
		t.Errorf("crashed = %+v, want stopped, no Windows", m)
	}
	if m := got["kept1"]; m.State != "kept" || m.Windows != "isolated" || m.PrefixBytes < 100000 || m.DiskBytes < 70000 || m.DataBytes < 170000 || m.StateDir != "" {
		t.Errorf("kept1 = %+v, want kept with an isolated prefix (>= 100000 B) and a disk (>= 70000 B)", m)
	}
	if w := l.Windows; w == nil || w.Prefix != shared || w.Users != 1 || w.Bytes < 5000 || w.Server {
		t.Errorf("shared Windows side = %+v, want %s used by 1 machine, no server", w, shared)
	}
	out.Reset()
	printMachines(&out, l)
	// Sizes are allocated blocks: the file system decides them (directories count too).
	for _, want := range []string{"NAME                 STATE     WINDOWS            DISK       TOTAL\n", "\nkept1                kept      isolated 1", "\nrun1                 stopping  shared             -          ",
		"\nshared Windows side: " + shared + ", ", " kB, used by 1 running machine(s), no wineserver\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("lab list output lacks %q:\n%s", want, out.String())
		}
	}

	ctx := context.Background()
	for _, tt := range []struct {
		name  string
		force bool
		want  string
	}{
		{"nosuch", false, `delete: no machine named "nosuch" (lab list shows every machine)`},
		{"windows", false, `delete: "windows" is the Windows side all machines share, not a machine (lab image prune does not touch it; remove $XDG_DATA_HOME/lab/windows by hand when no machine runs)`},
		{"a/b", false, `delete: "a/b": give a machine's name, not a path`},
		{"-x", false, `delete: vm: invalid VM name "-x": use 1-32 letters, digits, '-', '_' or '.'`},
		{"run1", false, `delete: machine "run1" is stopping: stop it first (lab down --name run1) or use lab delete --force run1`},
	} {
		if _, err := deleteMachine(ctx, tt.name, tt.force, &out); err == nil || err.Error() != tt.want {
			t.Errorf("delete %s: %v\nwant %s", tt.name, err, tt.want)
		}
	}
	if !isDir(filepath.Join(stateBase, "run1")) {
		t.Fatal("a refused delete removed the running machine's state dir")
	}
	for _, name := range []string{"kept1", "crashed"} {
		freed, err := deleteMachine(ctx, name, false, &out)
		if err != nil || freed == 0 {
			t.Errorf("delete %s = %d, %v; want bytes freed", name, freed, err)
		}
		if isDir(filepath.Join(stateBase, name)) || isDir(filepath.Join(dataBase, name)) {
			t.Errorf("delete %s left its state or data dir", name)
		}
	}
	if _, err := deleteMachine(ctx, "run1", true, &out); err != nil {
		t.Errorf("delete --force run1: %v", err)
	}
	l, _ = machine.Machines(context.Background())
	if len(l.Machines) != 0 || l.Windows == nil {
		t.Errorf("after deleting every machine: %+v; want none, and the shared Windows side kept", l)
	}
}

// The command tree: lab delete's usage errors exit 2 and say what to do, a missing machine 1.
func TestDeleteCommandExitStatus(t *testing.T) {
	labtest.TempXDG(t)
	for _, tt := range []struct {
		args    []string
		want    int
		wantErr string
	}{
		{[]string{"delete"}, 2, "delete: which machine? lab delete NAME (lab list shows every machine)"},
		{[]string{"delete", "-x"}, 2, "unknown shorthand flag: 'x' in -x"},
		{[]string{"delete", "a", "--name", "b"}, 2, `delete: two names, "a" and --name "b": give one`},
		{[]string{"delete", "nosuch"}, 1, `delete: no machine named "nosuch" (lab list shows every machine)`},
		{[]string{"delete", "--name", "nosuch"}, 1, `delete: no machine named "nosuch" (lab list shows every machine)`},
		{[]string{"delete", "nosuch", "--name", "nosuch"}, 1, `delete: no machine named "nosuch" (lab list shows every machine)`},
		{[]string{"list", "extra"}, 2, `unknown command "extra" for "lab list"`},
	} {
		app := newApp()
		app.SetArgs(tt.args)
		app.SetOut(new(discard))
		app.SetErr(new(discard))
		err := app.Execute()
		if got := exitCode(err); got != tt.want || err == nil || err.Error() != tt.wantErr {
			t.Errorf("lab %v: exit %d, %v; want %d, %s", tt.args, got, err, tt.want, tt.wantErr)
		}
	}
}

// No machine may take the shared Windows side's name: its data dir would be the prefix.
func TestUpRefusesTheSharedWindowsName(t *testing.T) {
	labtest.TempXDG(t)
	var s upSettings
	s.cfg.Name = "windows"
	_, err := upMachine(context.Background(), s, new(discard))
	want := `the name "windows" is the Windows side all machines share ($XDG_DATA_HOME/lab/windows): choose another --name`
	if err == nil || err.Error() != want || exitCode(err) != 2 {
		t.Errorf("lab up --name windows: %v; want a usage error %q", err, want)
	}
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
