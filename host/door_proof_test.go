package host_test

// Proof tests of the relay's front door (issue 9): the environment policy, seen through a
// real `lab relay` and `lab-interop` pair.

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"lab/wire"
)

// hostScriptWorld is a world whose relay exposes a bash script, hostscript, that prints a
// line: no share is needed to reach it, as with any exposed command.
func hostScriptWorld(t *testing.T, extra ...string) (*world, func(env ...string) *exec.Cmd) {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "hostscript")
	if err := os.WriteFile(script, []byte("#!/bin/bash\necho script-ran\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, append([]string{"--allow", "hostscript=" + script}, extra...)...)
	stub := filepath.Join(w.root, "hostscript")
	b, err := wire.FormatStub("hostscript")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stub, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return w, func(env ...string) *exec.Cmd {
		cmd := exec.Command(bin.interop, stub, "hostscript")
		cmd.Env = append(append(os.Environ(), "LAB_INTEROP_CONFIG="+w.config), env...)
		cmd.Dir = w.guestShare
		return cmd
	}
}

// TestProofEnvPolicy: BASH_ENV=/dev/stdin would make an exposed bash script run the
// guest's stdin as code; the relay refuses the launch with one line naming the variable,
// and runs nothing.
func TestProofEnvPolicy(t *testing.T) {
	w, run := hostScriptWorld(t)
	cases := []struct{ name, value, class string }{
		{"BASH_ENV", "/dev/stdin", "shell startup"},
		{"LD_PRELOAD", "/nonexistent/evil.so", "dynamic loader"},
		{"BASH_FUNC_echo%%", "() { builtin echo injected; }", "shell startup"},
		{"PS4", "$(echo injected >&2)", "shell startup"},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := output(t, run("LABENV=KEEP:"+tt.name, tt.name+"="+tt.value, "SHELLOPTS=xtrace", "KEEP=1"), "echo injected\n")
			want := "lab-interop: lab relay: variable " + tt.name + " may not cross to the host (host policy, " + tt.class +
				"; see lab relay --allow-env) (relay at unix:" + w.sock + ")\n"
			if code != 126 || out != "" || errOut != want {
				t.Errorf("exit %d stdout %q stderr %q; want exit 126 and stderr %q", code, out, errOut, want)
			}
		})
	}
	// An ordinary variable still crosses to the same script.
	out, errOut, code := output(t, run("LABENV=KEEP", "KEEP=1"), "")
	if code != 0 || out != "script-ran\n" || errOut != "" {
		t.Errorf("ordinary launch: exit %d stdout %q stderr %q", code, out, errOut)
	}
}

// TestProofEnvAllow: the host owner's --allow-env lets a denied variable through (here the
// very injection the deny list exists for, to show it is real).
func TestProofEnvAllow(t *testing.T) {
	_, run := hostScriptWorld(t, "--allow-env", "BASH_ENV")
	out, errOut, code := output(t, run("LABENV=BASH_ENV", "BASH_ENV=/dev/stdin"), "echo injected\n")
	if code != 0 || out != "injected\nscript-ran\n" {
		t.Errorf("exit %d stdout %q stderr %q; want the injected line then the script's", code, out, errOut)
	}
}
