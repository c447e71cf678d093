package provision

import (
	"strings"
	"testing"
)

func TestPlanWindowsPath(t *testing.T) {
	dirs := []string{"/mnt/c/windows/system32", "/mnt/c/windows"}
	script := windowsPathScript(dirs)
	sshdLine := "SetEnv PATH=" + SSHDDefaultPath + ":/mnt/c/windows/system32:/mnt/c/windows"
	tests := []struct {
		name  string
		dirs  []string
		probe string // added to the probe of an otherwise provisioned guest
		steps []string
		lines []string // substrings the apply script must hold
	}{
		{"fresh guest with OpenSSH", dirs, "sshd yes\n", []string{"windows path", "sshd path"},
			[]string{"echo '" + profileHook, ">> " + ProfilePath, "echo '" + sshdLine + "' >> " + SSHDConfigPath, "kill -HUP"}},
		{"provisioned", dirs, "sshd yes\nprofilehook yes\nfile " + WindowsPathFile + " " + sum(script) + "\nsshdpath " + sshdLine + "\n", nil, nil},
		{"profile.d already read", dirs, "profilehook yes\n", []string{"windows path"}, nil},
		{"no OpenSSH (dropbear)", dirs, "profilehook yes\nfile " + WindowsPathFile + " " + sum(script) + "\n", nil, nil},
		{"turned off", nil, "sshd yes\nprofilehook yes\nfile " + WindowsPathFile + " " + sum(script) + "\nsshdpath " + sshdLine + "\n",
			[]string{"windows path", "sshd path"}, []string{"rm -f " + WindowsPathFile, "sed -i '/^SetEnv /d' " + SSHDConfigPath}},
		{"off and absent", nil, "sshd yes\n", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := testDesired()
			want.wslEnv = nil // PATH alone here; WSL's variables share the line (TestPlanScripts)
			want.winDirs = tt.dirs
			want.winPath = windowsPathScript(tt.dirs)
			st, err := parseProbe(probeOf(want, true)+tt.probe, testMagic)
			if err != nil {
				t.Fatal(err)
			}
			p := plan(st, want)
			if got := changedSteps(p); strings.Join(got, ",") != strings.Join(tt.steps, ",") {
				t.Errorf("changed steps %v, want %v", got, tt.steps)
			}
			all := strings.Join(p.script(), "\n")
			for _, l := range tt.lines {
				if !strings.Contains(all, l) {
					t.Errorf("script lacks %q:\n%s", l, all)
				}
			}
		})
	}
	if !strings.Contains(string(script), `*:/mnt/c/windows/system32:*) ;; *) PATH="$PATH:/mnt/c/windows/system32"`) {
		t.Errorf("profile.d script:\n%s", script)
	}
}

func TestResultStepChanged(t *testing.T) {
	r := &Result{Steps: []Step{{Name: "windows path", Changed: true}, {Name: StepSSHDPath}}}
	if r.StepChanged(StepSSHDPath) || !r.StepChanged("windows path") || r.StepChanged("absent") {
		t.Errorf("StepChanged on %+v is wrong", r.Steps)
	}
	r.Steps[1].Changed = true
	if !r.StepChanged(StepSSHDPath) {
		t.Error("a changed sshd path step is not reported")
	}
}
