package guest

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lab/trace"
	"lab/wire"
)

// The kernel's text for lab's rules (Linux 6.1, as provisioning registers them).
const (
	kernelPE   = "enabled\ninterpreter /usr/local/lib/lab/interop\nflags: POF\noffset 0\nmagic 4d5a\n"
	kernelHost = "enabled\ninterpreter /usr/local/lib/lab/interop\nflags: POF\noffset 0\nmagic 23216c61622d686f73740a\n"
)

func TestBinfmtRuleMatches(t *testing.T) {
	const interp = "/usr/local/lib/lab/interop"
	stub, _ := wire.FormatStub("hostprintf")
	for _, tc := range []struct {
		name, text, file, interp string
		head                     []byte
		want                     bool
	}{
		{"pe", kernelPE, "/mnt/c/a.exe", interp, []byte("MZ\x90\x00"), true},
		{"pe, other interpreter", kernelPE, "/mnt/c/a.exe", "/usr/bin/other", []byte("MZ"), false},
		{"pe, disabled", strings.Replace(kernelPE, "enabled", "disabled", 1), "/a.exe", interp, []byte("MZ"), false},
		{"pe vs stub", kernelPE, "/usr/bin/hostprintf", interp, stub, false},
		{"stub", kernelHost, "/usr/bin/hostprintf", interp, stub, true},
		{"short file", kernelHost, "/x", interp, []byte("#!lab"), false},
		{"mask", "enabled\ninterpreter /i\nflags: \noffset 1\nmagic 4142\nmask ffdf\n", "/x", "/i", []byte("_Ab"), true},
		{"mask, no match", "enabled\ninterpreter /i\nflags: \noffset 1\nmagic 4142\nmask ffdf\n", "/x", "/i", []byte("_AC"), false},
		{"extension", "enabled\ninterpreter /i\nflags: P\nextension .exe\n", "/mnt/c/A.exe", "/i", nil, true},
		{"extension, other", "enabled\ninterpreter /i\nflags: P\nextension .exe\n", "/mnt/c/A.bat", "/i", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := parseBinfmtRule("r", tc.text)
			if got := r.matches(tc.file, tc.head, tc.interp); got != tc.want {
				t.Errorf("%+v matches %q = %v; want %v", r, tc.head, got, tc.want)
			}
		})
	}
	r := parseBinfmtRule(RuleHost, kernelHost)
	want := binfmtRule{Name: RuleHost, Enabled: true, Interpreter: interp, Flags: "POF", Magic: "23216c61622d686f73740a"}
	if r != want {
		t.Errorf("parse = %+v; want %+v", r, want)
	}
	if got := printableMagic(r.Magic); got != `"#!lab-host\n"` {
		t.Errorf("printableMagic = %s", got)
	}
	if got := flagMeaning("PF"); got != "P: keep the caller's argv[0]; F: interpreter opened at registration" {
		t.Errorf("flagMeaning = %q", got)
	}
}

func FuzzBinfmtRule(f *testing.F) {
	f.Add(kernelHost, []byte("#!lab-host\nx\n"))
	f.Add("enabled\ninterpreter /i\noffset 200\nmagic 41\nmask zz\n", []byte("A"))
	f.Fuzz(func(t *testing.T, text string, head []byte) {
		r := parseBinfmtRule("r", text)
		r.matches("/f.exe", head, r.Interpreter) // never panics, whatever the offset or mask
	})
}

func TestOpenTrace(t *testing.T) {
	if tr := openTrace(func(string) string { return "" }); tr != nil {
		t.Fatal("tracing without LAB_TRACE")
	}
	// Unusable file: no tracing, and nothing else changes.
	if tr := openTrace(func(string) string { return "/nonexistent/dir/trace" }); tr != nil {
		t.Fatal("tracing into a file that cannot be opened")
	}
	// A nil tracer is what every ordinary launch calls.
	var none *guestTrace
	none.argv([]string{"a"})
	none.result(&wire.LaunchResult{})
	none.failed(126, "x")
	none.close()
	if none.ID() != "" || none.now() != 0 {
		t.Fatal("nil tracer has an id or a clock")
	}

	p := filepath.Join(t.TempDir(), "trace.jsonl")
	tr := openTrace(func(k string) string {
		if k == TraceEnv {
			return p
		}
		return ""
	})
	if tr == nil || wire.CheckTraceID(tr.ID()) != nil || len(tr.ID()) != 16 {
		t.Fatalf("tracer %+v", tr)
	}
	tr.argv([]string{"/usr/local/lib/lab/interop", "/mnt/c/a.exe", "a.exe", "x"})
	tr.launch(&wire.Launch{Format: "pe", Path: "/mnt/c/a.exe", Argv: []string{"a.exe", "x"}, Cwd: "/mnt/c",
		Env: []wire.EnvVar{{Name: "LABENV", Value: "P/p:U"}, {Name: "P", Value: "/mnt/c", Flags: wire.EnvPath}, {Name: "U", Flags: wire.EnvUnset}}})
	tr.stream("stdout", 6, nil)
	tr.stream("stdin", 0, errors.New("boom"))
	tr.exit(&wire.Exit{Signal: 9})
	tr.close()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	evs, bad, err := trace.Parse(bytes.NewReader(b))
	if err != nil || bad != 0 {
		t.Fatalf("parse: %v, %d bad", err, bad)
	}
	var got []string
	for _, e := range evs {
		if e.Trace != tr.ID() || e.Side != trace.SideGuest {
			t.Errorf("event %+v", e)
		}
		got = append(got, e.Step+": "+e.Text)
	}
	want := []string{
		`interpreter argv: ["/usr/local/lib/lab/interop" "/mnt/c/a.exe" "a.exe" "x"]  (flag P: argv[1] "/mnt/c/a.exe" is the file execve was given, argv[2] "a.exe" the caller's argv[0])`,
		`file: format pe: asks for the guest file /mnt/c/a.exe (absolute, guest symlinks resolved), argv ["a.exe" "x"], cwd /mnt/c`,
		`env: LABENV="P/p:U" sends P="/mnt/c"/p, U (unset)`,
		`stream: stdout: 6 bytes host -> guest`,
		`stream: stdin: 0 bytes guest -> host (boom)`,
		`exit: status 137 (host process killed by signal 9)`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
