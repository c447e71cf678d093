package provision

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/pkg/sftp"
)

// TestProbeScriptRuns runs the probe script with the host's sh (and busybox's, when
// installed: lab's own guests run it): it must parse and answer in both shells. The host
// stands in for a guest; /usr/bin/true and /usr/bin/false stand in for two exposed
// commands' entries, one with the sum the probe is told to expect (a stub, without
// reading its head) and one without (its head is read: not lab's magic, a foreign file).
func TestProbeScriptRuns(t *testing.T) {
	trueSum, err := os.ReadFile("/usr/bin/true")
	if err != nil {
		t.Skip("no /usr/bin/true on this host")
	}
	if fi, err := os.Lstat("/usr/bin/false"); err != nil || !fi.Mode().IsRegular() {
		t.Skip("no regular /usr/bin/false on this host")
	}
	shells := [][]string{{"sh", "-s"}}
	if _, err := exec.LookPath("busybox"); err == nil {
		shells = append(shells, []string{"busybox", "sh", "-s"})
	}
	script := probeScript(DefaultRules(testMagic, true), map[string]string{"true": sum(trueSum), "false": sum([]byte("other"))})
	for _, sh := range shells {
		t.Run(sh[0], func(t *testing.T) {
			cmd := exec.Command(sh[0], sh[1:]...)
			cmd.Stdin = strings.NewReader(script)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil || stderr.Len() > 0 {
				t.Fatalf("probe script: %v: %s", err, stderr.String())
			}
			st, err := parseProbe(string(out), testMagic)
			if err != nil {
				t.Fatal(err)
			}
			if st.goarch != runtime.GOARCH {
				t.Errorf("arch %q, want %q", st.goarch, runtime.GOARCH)
			}
			if st.stubs["true"] != sum(trueSum) || st.others["true"] {
				t.Errorf("/usr/bin/true with the expected sum: stubs %v, others %v; want a stub", st.stubs, st.others)
			}
			if _, ok := st.stubs["false"]; ok || !st.others["false"] {
				t.Errorf("/usr/bin/false with another sum: stubs %v, others %v; want a foreign file", st.stubs, st.others)
			}
		})
	}
}

// fakeGuest answers every command with the probe output of a provisioned guest and
// counts the commands.
type fakeGuest struct {
	answer string
	cmds   []string
}

func (g *fakeGuest) Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	g.cmds = append(g.cmds, cmd)
	io.WriteString(stdout, g.answer)
	return 0, nil
}

func (g *fakeGuest) SFTP() (*sftp.Client, error) { return nil, errors.New("fake guest: no SFTP") }

// TestProvisionUnchangedOneRoundTrip: re-provisioning a guest where everything is in
// place runs one guest command (the probe), and says nothing changed.
func TestProvisionUnchangedOneRoundTrip(t *testing.T) {
	want := testDesired()
	interp := filepath.Join(t.TempDir(), "lab-interop")
	if err := os.WriteFile(interp, want.interp, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Interpreter: interp,
		Token:       want.token,
		InteropConf: func(Settings) ([]byte, error) { return want.conf, nil },
		Shares:      want.shares,
		Exposed:     []Exposed{{Name: "notify-send", HostPath: "/usr/bin/notify-send"}},
		Stub:        func(e Exposed) []byte { return want.stubs[e.Name] },
		StubMagic:   testMagic,
		WSLNames:    true,
		DistroName:  "default",
	}
	g := &fakeGuest{answer: probeOf(want, true)}
	res, err := Provision(context.Background(), g, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed() || len(g.cmds) != 1 {
		t.Errorf("re-provisioning changed %v in %d guest commands; want nothing in 1", changedSteps(&planned{steps: res.Steps}), len(g.cmds))
	}
	if !strings.Contains(res.Summary(), "nothing changed") {
		t.Errorf("summary %q", res.Summary())
	}
}

// TestProbeGuardEnabled runs the probe's guard check (file tests instead of systemctl
// is-enabled) against enable links in a temporary tree: enabled only when both links
// resolve to the unit.
func TestProbeGuardEnabled(t *testing.T) {
	script := probeScript(DefaultRules(testMagic, true), nil)
	start := strings.Index(script, "  g=yes\n")
	end := strings.Index(script, "echo \"guard enabled\"\n")
	if start < 0 || end < start {
		t.Fatalf("no guard check in the probe:\n%s", script)
	}
	check := script[start : end+len("echo \"guard enabled\"\n")]
	root := t.TempDir()
	check = strings.ReplaceAll(check, "/etc/systemd/system/", root+"/etc/systemd/system/")
	check = strings.ReplaceAll(check, GuardUnitPath, root+GuardUnitPath)
	unit := root + GuardUnitPath
	other := filepath.Join(root, "other.service")
	for _, f := range []string{unit, other} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("[Unit]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(l, target string) {
		p := root + l
		os.Remove(p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if target != "" {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tt := range []struct {
		name    string
		targets [2]string
		want    bool
	}{
		{"both links", [2]string{unit, unit}, true},
		{"systemd-binfmt's link missing", [2]string{unit, ""}, false},
		{"no links (disabled)", [2]string{"", ""}, false},
		{"a link to another unit", [2]string{unit, other}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for i, l := range guardWants {
				link(l, tt.targets[i])
			}
			out, err := exec.Command("sh", "-c", check).CombinedOutput()
			if err != nil && len(out) > 0 {
				t.Fatalf("%v: %s", err, out)
			}
			if got := strings.Contains(string(out), "guard enabled"); got != tt.want {
				t.Errorf("guard enabled = %v (%q), want %v", got, out, tt.want)
			}
		})
	}
}
