package provision

import (
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

var testMagic = []byte("#!lab-host\n")

func TestRuleString(t *testing.T) {
	tests := []struct {
		rule Rule
		want string
	}{
		{DefaultRules(testMagic, true)[0], ":WSLInterop:M::MZ::/usr/local/lib/lab/interop:POF"}, // WSL's string, with O
		{DefaultRules(testMagic, false)[0], ":lab-pe:M::MZ::/usr/local/lib/lab/interop:POF"},
		{DefaultRules(testMagic, true)[1], `:lab-host:M::#!lab-host\x0a::/usr/local/lib/lab/interop:POF`},
		{Rule{Name: "x", Offset: 4, Magic: []byte{0, ':', '\\'}, Mask: []byte{0xff, 0xff, 0xfe}, Interpreter: "/i", Flags: "P"},
			`:x:M:4:\x00\x3a\x5c:\xff\xff\xfe:/i:P`},
	}
	for _, tt := range tests {
		if got := tt.rule.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
		if err := tt.rule.Validate(); err != nil {
			t.Errorf("Validate(%q): %v", tt.want, err)
		}
	}
}

func TestRuleValidate(t *testing.T) {
	bad := []Rule{
		{Name: "", Magic: []byte("MZ"), Interpreter: "/i"},
		{Name: "a:b", Magic: []byte("MZ"), Interpreter: "/i"},
		{Name: "register", Magic: []byte("MZ"), Interpreter: "/i"},
		{Name: "a", Interpreter: "/i"},
		{Name: "a", Magic: []byte("MZ"), Offset: 127, Interpreter: "/i"},
		{Name: "a", Magic: []byte("MZ"), Mask: []byte{1}, Interpreter: "/i"},
		{Name: "a", Magic: []byte("MZ"), Interpreter: "relative"},
		{Name: "a", Magic: []byte("MZ"), Interpreter: "/" + strings.Repeat("x", 127)},
		{Name: "a", Magic: []byte("MZ"), Interpreter: "/i", Flags: "T"},
	}
	for _, r := range bad {
		if err := r.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", r)
		}
	}
}

func TestParseRuleStatus(t *testing.T) {
	pe := DefaultRules(testMagic, true)[0]
	tests := []struct {
		text     string
		enabled  bool
		mismatch string // substring; "" means match
		wantErr  bool
	}{
		{"enabled\ninterpreter /usr/local/lib/lab/interop\nflags: POF\noffset 0\nmagic 4d5a\n", true, "", false},
		{"disabled\ninterpreter /usr/local/lib/lab/interop\nflags: POF\noffset 0\nmagic 4d5a\n", false, "", false},
		{"enabled\ninterpreter /init\nflags: POF\noffset 0\nmagic 4d5a\n", true, "interpreter", false},
		{"enabled\ninterpreter /usr/local/lib/lab/interop\nflags: P\noffset 0\nmagic 4d5a\n", true, "flags", false},
		// An older lab's rule (no O): provisioning registers it again.
		{"enabled\ninterpreter /usr/local/lib/lab/interop\nflags: PF\noffset 0\nmagic 4d5a\n", true, "flags", false},
		{"enabled\ninterpreter /usr/local/lib/lab/interop\nflags: POF\noffset 0\nmagic 4d5a\nmask ffff\n", true, "", false},
		{"enabled\ninterpreter /usr/local/lib/lab/interop\nflags: POF\noffset 0\nmagic 4d5a\nmask ff00\n", true, "mask", false},
		{"enabled\ninterpreter /usr/local/lib/lab/interop\nflags: POF\noffset 2\nmagic 4d5a\n", true, "offset", false},
		{"enabled\ninterpreter /x\nflags: POF\noffset 0\nmagic zz\n", false, "", true},
		{"enabled\nextension .exe\n", false, "", true},
		{"", false, "", true},
	}
	for _, tt := range tests {
		st, err := ParseRuleStatus(tt.text)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseRuleStatus(%q) error %v, want error %v", tt.text, err, tt.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if st.Enabled != tt.enabled {
			t.Errorf("ParseRuleStatus(%q).Enabled = %v", tt.text, st.Enabled)
		}
		m := pe.Mismatch(st)
		if (tt.mismatch == "") != (m == "") || !strings.Contains(m, tt.mismatch) {
			t.Errorf("Mismatch(%q) = %q, want it to mention %q", tt.text, m, tt.mismatch)
		}
	}
}

func FuzzParseRuleStatus(f *testing.F) {
	f.Add("enabled\ninterpreter /usr/local/lib/lab/interop\nflags: POF\noffset 0\nmagic 4d5a\n")
	f.Add("disabled\ninterpreter /i\nflags: \noffset x\nmagic 4\nmask ff\n")
	f.Fuzz(func(t *testing.T, text string) {
		st, err := ParseRuleStatus(text)
		if err == nil {
			_ = DefaultRules(testMagic, true)[0].Mismatch(st)
		}
	})
}

// probeOf renders what the probe script prints for a guest holding want (all in place).
func probeOf(want desired, enabled bool) string {
	var b strings.Builder
	b.WriteString("arch x86_64\n")
	b.WriteString("file " + InterpreterPath + " " + sum(want.interp) + "\n")
	b.WriteString("file " + ConfigPath + " " + sum(want.conf) + "\n")
	b.WriteString("file " + TokenPath + " " + sum(want.token) + "\n")
	b.WriteString("interpsum recorded\n")
	b.WriteString("mode /etc/lab 755\nmode " + TokenPath + " 600\nlink " + LabpathPath + " " + InterpreterPath + "\nbinfmt mounted\n")
	if want.wslpath {
		b.WriteString("link " + WslpathPath + " " + InterpreterPath + "\n")
	}
	if f := wslEnvScript(want.wslEnv); f != nil {
		b.WriteString("file " + WSLEnvFile + " " + sum(f) + "\nprofilehook yes\n")
	}
	state := "enabled"
	if !enabled {
		state = "disabled"
	}
	for _, r := range want.rules {
		b.WriteString("rule " + r.Name + " " + state + "|interpreter " + r.Interpreter + "|flags: POF|offset 0|magic " +
			strings.TrimSpace(hexOf(r.Magic)) + "|\n")
	}
	for _, s := range want.shares {
		b.WriteString("mount " + s.Tag + " " + s.GuestPath + "\n")
	}
	var names []string
	for n := range want.stubs {
		names = append(names, n)
	}
	sort.Strings(names)
	m := strings.Join(names, "\n")
	if m != "" {
		m += "\n"
	}
	b.WriteString("file " + StubsManifest + " " + sum([]byte(m)) + "\n")
	b.WriteString("manifest " + strings.Join(names, " ") + "\n")
	for n, d := range want.stubs {
		b.WriteString("entry " + n + " = " + sum(d) + "\n")
	}
	return b.String()
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(digits[c>>4])
		s.WriteByte(digits[c&15])
	}
	return s.String()
}

func testDesired() desired {
	return desired{
		interp:  []byte("\x7fELF interpreter v1"),
		conf:    []byte("relay = vsock:2:5555\n"),
		token:   []byte(strings.Repeat("ab", 32)),
		rules:   DefaultRules(testMagic, true),
		others:  otherRules(DefaultRules(testMagic, true)),
		enabled: true,
		wslpath: true,
		wslEnv:  wslEnv(true, "default", true),
		shares:  []Share{{Tag: "share0", HostPath: "/srv/x", GuestPath: "/mnt/host"}},
		magic:   testMagic,
		stubs:   map[string][]byte{"notify-send": []byte("#!lab-host\n/usr/bin/notify-send\n")},
	}
}

func changedSteps(p *planned) []string {
	var out []string
	for _, s := range p.steps {
		if s.Changed {
			out = append(out, s.Name)
		}
	}
	return out
}

func TestPlanIdempotent(t *testing.T) {
	want := testDesired()
	st, err := parseProbe(probeOf(want, true), testMagic)
	if err != nil {
		t.Fatal(err)
	}
	p := plan(st, want)
	if c := changedSteps(p); len(c) != 0 {
		t.Errorf("second run would change %v; want nothing", c)
	}
	if len(p.uploads) != 0 || p.token != nil {
		t.Errorf("second run uploads %d files (token %v)", len(p.uploads), p.token != nil)
	}
	if !p.empty() {
		t.Errorf("second run would still run in the guest: %q", p.script())
	}
}

func TestPlanChanges(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(probe string, want *desired) string
		steps []string
	}{
		{"fresh guest", func(string, *desired) string { return "arch x86_64\nbinfmt mounted\n" },
			[]string{"interpreter", "labpath", "wslpath", "config", "token", "rule WSLInterop", "rule lab-host", "wsl env", "share share0", "expose notify-send"}},
		{"new interpreter re-registers (flag F)", func(p string, w *desired) string {
			w.interp = []byte("\x7fELF interpreter v2")
			return p
		}, []string{"interpreter", "rule WSLInterop", "rule lab-host"}},
		{"interop off is turned back on", func(p string, w *desired) string {
			return probeOf(*w, false)
		}, []string{"rule WSLInterop", "rule lab-host"}},
		{"an older lab's lab-pe rule is removed", func(p string, w *desired) string {
			return p + "rule lab-pe enabled|interpreter " + InterpreterPath + "|flags: POF|offset 0|magic 4d5a|\n"
		}, []string{"rule lab-pe"}},
		{"someone else's lab-pe rule is left alone", func(p string, w *desired) string {
			return p + "rule lab-pe enabled|interpreter /usr/bin/other|flags: POF|offset 0|magic 4d5a|\n"
		}, nil},
		{"wsl.conf enabled=false: registered but disabled, no WSL_INTEROP", func(p string, w *desired) string {
			w.enabled = false
			w.wslEnv = wslEnv(true, "default", false)
			return p
		}, []string{"rule WSLInterop", "rule lab-host", "wsl env"}},
		{"wsl.conf enabled=false: a disabled rule stays so", func(p string, w *desired) string {
			w.enabled = false
			w.wslEnv = wslEnv(true, "default", false)
			return probeOf(*w, false)
		}, nil},
		{"no WSL names: lab-pe, no wslpath, no WSL variables", func(p string, w *desired) string {
			w.rules = DefaultRules(testMagic, false)
			w.others = otherRules(w.rules)
			w.wslpath = false
			w.wslEnv = nil
			return p + "rule WSLInterop enabled|interpreter " + InterpreterPath + "|flags: POF|offset 0|magic 4d5a|\n"
		}, []string{"wslpath", "rule WSLInterop", "rule lab-pe", "wsl env"}},
		{"token mode repaired", func(p string, w *desired) string {
			return strings.Replace(p, "mode "+TokenPath+" 600", "mode "+TokenPath+" 644", 1)
		}, []string{"token"}},
		{"stale stub removed", func(p string, w *desired) string {
			return strings.Replace(p, "manifest notify-send", "manifest notify-send old", 1) + "entry old " + hexOf(testMagic) + " 00\n"
		}, []string{"unexpose old"}},
		{"foreign file not overwritten", func(p string, w *desired) string {
			w.stubs["ls"] = []byte("#!lab-host\n/bin/ls\n")
			return p + "entry ls 7f454c46 00\n"
		}, nil},
		{"binfmt_misc not mounted", func(p string, w *desired) string {
			return strings.Replace(p, "binfmt mounted\n", "", 1)
		}, []string{"binfmt_misc"}},
		{"systemd persists the rules and installs the guard", func(p string, w *desired) string {
			return p + "systemd yes\napt yes\n"
		}, []string{"binfmt.d", "binfmt guard"}},
		{"systemd guard in place: nothing to do", func(p string, w *desired) string {
			return p + "systemd yes\napt yes\nguard enabled\n" + systemdFiles(*w, true)
		}, nil},
		{"systemd guard disabled by hand is enabled again", func(p string, w *desired) string {
			return p + "systemd yes\napt yes\n" + systemdFiles(*w, true)
		}, []string{"binfmt guard"}},
		{"systemd guard without apt: no apt hook needed", func(p string, w *desired) string {
			return p + "systemd yes\nguard enabled\n" + systemdFiles(*w, false)
		}, nil},
		{"systemd guard unit in /etc (lab before) moves out", func(p string, w *desired) string {
			return p + "systemd yes\napt yes\nguard enabled\n" + systemdFiles(*w, true) + "file " + oldGuardUnitPath + " " + sum([]byte(guardUnit)) + "\n"
		}, []string{"binfmt guard"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := testDesired()
			out := tt.edit(probeOf(want, true), &want)
			st, err := parseProbe(out, testMagic)
			if err != nil {
				t.Fatal(err)
			}
			p := plan(st, want)
			got := changedSteps(p)
			if strings.Join(got, ",") != strings.Join(tt.steps, ",") {
				t.Errorf("changed steps %v, want %v", got, tt.steps)
			}
		})
	}
}

// systemdFiles is the probe's "file" lines of a systemd guest provisioned for want
// (binfmt.d and the guard; the apt hook with apt).
func systemdFiles(want desired, apt bool) string {
	var conf strings.Builder
	conf.WriteString("# lab interop formats (written by lab provision)\n")
	for _, r := range want.rules {
		conf.WriteString(r.String() + "\n")
	}
	out := "file " + BinfmtConfPath + " " + sum([]byte(conf.String())) + "\n" +
		"file " + GuardScriptPath + " " + sum([]byte(guardScript)) + "\n" +
		"file " + GuardUnitPath + " " + sum([]byte(guardUnit)) + "\n"
	if apt {
		out += "file " + GuardAptPath + " " + sum([]byte(guardApt)) + "\n"
	}
	return out
}

// TestGuardPlan checks what the guard step uploads and runs on a fresh systemd guest.
func TestGuardPlan(t *testing.T) {
	want := testDesired()
	st, err := parseProbe(probeOf(want, true)+"systemd yes\napt yes\n", testMagic)
	if err != nil {
		t.Fatal(err)
	}
	p := plan(st, want)
	var targets []string
	for _, u := range p.uploads {
		targets = append(targets, u.target)
	}
	for _, f := range []string{BinfmtConfPath, GuardScriptPath, GuardUnitPath, GuardAptPath} {
		if !strings.Contains(strings.Join(targets, " "), f) {
			t.Errorf("uploads %v, want %s among them", targets, f)
		}
	}
	if !strings.Contains(strings.Join(p.script(), "\n"), "systemctl enable lab-binfmt.service") {
		t.Errorf("script does not enable the guard:\n%s", strings.Join(p.script(), "\n"))
	}
}

// The guard's unit is where `systemctl mask --runtime` (a link in /run) can turn it off for
// one boot: below /run in systemd's unit search path. A unit file in /etc/systemd/system
// outranks /run, so the runtime mask was silently ignored (binfmt_systemd on Debian).
// A unit lab wrote to /etc before is disabled (its links point at it) and removed.
func TestGuardUnitMaskable(t *testing.T) {
	if GuardUnitPath != "/usr/local/lib/systemd/system/lab-binfmt.service" {
		t.Errorf("GuardUnitPath = %s: not below /run/systemd/system in the unit search path", GuardUnitPath)
	}
	want := testDesired()
	st, err := parseProbe(probeOf(want, true)+"systemd yes\napt yes\nguard enabled\n"+systemdFiles(want, true)+"file "+oldGuardUnitPath+" 00\n", testMagic)
	if err != nil {
		t.Fatal(err)
	}
	script := strings.Join(plan(st, want).script(), "\n")
	disable := strings.Index(script, "systemctl disable lab-binfmt.service 2>/dev/null; rm -f /etc/systemd/system/lab-binfmt.service")
	enable := strings.Index(script, "systemctl enable lab-binfmt.service")
	if disable < 0 || enable < disable {
		t.Errorf("script does not disable and remove the old unit before enabling the new one:\n%s", script)
	}
}

func TestParseProbeUnknownArch(t *testing.T) {
	if _, err := parseProbe("arch pdp11\n", nil); err == nil {
		t.Fatal("want an error for an unknown architecture")
	}
	if _, err := parseProbe("", nil); err == nil {
		t.Fatal("want an error for an empty answer")
	}
}

func TestEnsureToken(t *testing.T) {
	dir := t.TempDir()
	a, err := EnsureToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 64 {
		t.Errorf("token length %d, want 64", len(a))
	}
	fi, err := os.Stat(filepath.Join(dir, TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("token mode %v, want 0600", fi.Mode().Perm())
	}
	b, err := EnsureToken(dir)
	if err != nil || string(a) != string(b) {
		t.Errorf("second EnsureToken = %q, %v; want the same token", b, err)
	}
}

func TestExposedList(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "tool")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	list, added, err := AddExposed(nil, []string{prog}, "host-tool")
	if err != nil || len(added) != 1 || added[0].Name != "host-tool" || added[0].HostPath != prog {
		t.Fatalf("AddExposed = %v, %v, %v", list, added, err)
	}
	if _, _, err := AddExposed(list, []string{prog, prog}, "x"); err == nil {
		t.Error("--as with two programs: want an error")
	}
	if _, _, err := AddExposed(list, []string{filepath.Join(dir, "missing")}, ""); err == nil {
		t.Error("missing program: want an error")
	}
	if _, _, err := AddExposed(list, []string{prog}, "a/b"); err == nil {
		t.Error("name with a slash: want an error")
	}
	if err := SaveExposed(dir, list); err != nil {
		t.Fatal(err)
	}
	got, err := LoadExposed(dir)
	if err != nil || len(got) != 1 || got[0] != list[0] {
		t.Fatalf("LoadExposed = %v, %v", got, err)
	}
	list, removed, err := RemoveExposed(got, []string{"host-tool"})
	if err != nil || len(list) != 0 || len(removed) != 1 {
		t.Fatalf("RemoveExposed = %v, %v, %v", list, removed, err)
	}
	if _, _, err := RemoveExposed(list, []string{"nothing"}); err == nil {
		t.Error("unexpose of an unknown name: want an error")
	}
}

// TestPlanScripts checks the guest commands of the WSL-name and wsl.conf steps.
func TestPlanScripts(t *testing.T) {
	want := testDesired()
	want.enabled = false
	want.wslEnv = wslEnv(true, "default", false)
	want.winDirs = []string{"/mnt/c/windows/system32", "/mnt/c/windows"}
	want.winPath = windowsPathScript(want.winDirs)
	st, err := parseProbe("arch x86_64\nbinfmt mounted\nsshd yes\nsshdpath SetEnv PATH=/old\nrule lab-pe enabled|interpreter "+
		InterpreterPath+"|flags: POF|offset 0|magic 4d5a|\n", testMagic)
	if err != nil {
		t.Fatal(err)
	}
	p := plan(st, want)
	script := strings.Join(p.script(), "\n")
	for _, line := range []string{
		"ln -sfn /usr/local/lib/lab/interop /usr/bin/wslpath",
		"echo -1 > /proc/sys/fs/binfmt_misc/lab-pe",
		"printf '%s' ':WSLInterop:M::MZ::/usr/local/lib/lab/interop:POF' > /proc/sys/fs/binfmt_misc/register\necho 0 > /proc/sys/fs/binfmt_misc/WSLInterop",
		"echo 0 > /proc/sys/fs/binfmt_misc/lab-host",
		"sed -i '/^SetEnv /d' /etc/ssh/sshd_config",
		"echo 'SetEnv PATH=" + SSHDDefaultPath + ":/mnt/c/windows/system32:/mnt/c/windows WSL_DISTRO_NAME=default' >> /etc/ssh/sshd_config",
	} {
		if !strings.Contains(script, line) {
			t.Errorf("script lacks %q:\n%s", line, script)
		}
	}
	var env []byte
	for _, u := range p.uploads {
		if u.target == WSLEnvFile {
			env = u.data
		}
	}
	if !strings.Contains(string(env), "export WSL_DISTRO_NAME='default'\n") || strings.Contains(string(env), "WSL_INTEROP") {
		t.Errorf("%s with interop disabled:\n%s", WSLEnvFile, env)
	}
	if got := string(wslEnvScript(wslEnv(true, "vm1", true))); !strings.Contains(got, "export WSL_INTEROP='/etc/lab/interop.conf'\n") {
		t.Errorf("%s with interop enabled lacks WSL_INTEROP:\n%s", WSLEnvFile, got)
	}
}

func TestParseProbeWSLConf(t *testing.T) {
	st, err := parseProbe("arch x86_64\nwslconf [interop]\nwslconf   enabled = false  \nwslconf \nlink /usr/bin/wslpath /usr/local/lib/lab/interop\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.wslConf != "[interop]\n  enabled = false  \n\n" || st.wslpath != InterpreterPath {
		t.Errorf("wslConf %q, wslpath %q", st.wslConf, st.wslpath)
	}
	if c := ParseWSLConf(st.wslConf); c.InteropEnabled || !c.AppendWindowsPath {
		t.Errorf("parsed %+v", c)
	}
}

func TestParseWSLConf(t *testing.T) {
	def := DefaultWSLConf()
	for _, tc := range []struct {
		text string
		want WSLConf
		warn string
	}{
		{"", def, ""},
		{"[interop]\nenabled=false\n", WSLConf{InteropEnabled: false, AppendWindowsPath: true}, ""},
		{"[interop]\nappendWindowsPath = false\n", WSLConf{InteropEnabled: true, AppendWindowsPath: false}, ""},
		{"[Interop]\nENABLED = FALSE # off\nappendwindowspath=\"false\"\n", WSLConf{}, ""},
		{"[automount]\nenabled=false\n[interop]\n", def, ""}, // another section's key
		{"[lab]\ncwdWarning=true\n", WSLConf{InteropEnabled: true, AppendWindowsPath: true, CwdWarning: true}, ""},
		{"; comment\n# comment\n[interop]\nenabled=1\nappendWindowsPath=0\n", WSLConf{InteropEnabled: true}, ""},
		{"[interop]\nenabled=nope\n", def, `/etc/wsl.conf:2: interop.enabled: want true or false, got "nope" (the default is kept)`},
		{"[interop\nenabled=false\n", def, "/etc/wsl.conf:1: section header without ]"},
		{"[interop]\nenabled\n", def, "/etc/wsl.conf:2: expected key = value"},
	} {
		got := ParseWSLConf(tc.text)
		warn := strings.Join(got.Warnings, "; ")
		got.Warnings = nil
		if got.InteropEnabled != tc.want.InteropEnabled || got.AppendWindowsPath != tc.want.AppendWindowsPath ||
			got.CwdWarning != tc.want.CwdWarning || warn != tc.warn {
			t.Errorf("ParseWSLConf(%q) = %+v, warnings %q; want %+v, %q", tc.text, got, warn, tc.want, tc.warn)
		}
	}
}

func FuzzParseWSLConf(f *testing.F) {
	f.Add("[interop]\nenabled = false\nappendWindowsPath=true\n[lab]\ncwdWarning=1\n")
	f.Add("[x\n=\n\"\n")
	f.Fuzz(func(t *testing.T, text string) {
		c := ParseWSLConf(text)
		// A file without lab's keys keeps the defaults.
		if !strings.Contains(strings.ToLower(text), "enabled") && !c.InteropEnabled {
			t.Errorf("interop disabled without an enabled key: %q", text)
		}
	})
}

// TestApplyScriptOrder: whatever order plan's steps run in, the apply script renames the
// uploads into place, then records the interpreter's sum, then touches binfmt_misc rules
// (flag F opens the interpreter at registration: it must be the new file).
func TestApplyScriptOrder(t *testing.T) {
	want := testDesired()
	want.interp = []byte("\x7fELF interpreter v2")
	st, err := parseProbe(strings.Replace(probeOf(testDesired(), true), "link "+LabpathPath, "link-gone", 1), testMagic)
	if err != nil {
		t.Fatal(err)
	}
	script := plan(st, want).script()
	index := func(prefix string) int {
		for i, l := range script {
			if strings.HasPrefix(l, prefix) {
				return i
			}
		}
		t.Fatalf("script lacks a line starting %q:\n%s", prefix, strings.Join(script, "\n"))
		return -1
	}
	link := index("ln -sfn " + InterpreterPath + " " + LabpathPath)
	rename := index("mv -f '" + path.Dir(InterpreterPath) + "/.lab-tmp.interop' '" + InterpreterPath + "'")
	record := index(`echo "$(stat -c`)
	unregister := index("echo -1 > " + BinfmtDir + "/WSLInterop")
	register := index("printf '%s' ':WSLInterop:")
	if !(link < rename && rename < record && record < unregister && unregister < register) {
		t.Errorf("order link %d, rename %d, record %d, unregister %d, register %d; want increasing:\n%s",
			link, rename, record, unregister, register, strings.Join(script, "\n"))
	}
}

// TestUploadDirs: apply makes every upload's directory before writing next to it, not a
// fixed list (the guard's unit goes to /usr/local/lib/systemd/system, which a fresh
// Debian disk does not have).
func TestUploadDirs(t *testing.T) {
	var p planned
	p.upload(GuardUnitPath, []byte("x"), 0o644)
	p.upload("/etc/lab/interop.conf", []byte("x"), 0o644)
	p.upload("/etc/lab/exposed", []byte("x"), 0o644)
	want := "mkdir -p /etc/lab /usr/local/lib/systemd/system"
	if got := p.uploadDirs(); got != want {
		t.Errorf("uploadDirs() = %q, want %q", got, want)
	}
}
