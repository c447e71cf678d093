package scenarios

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLoadErrors: what a user sees for a malformed scenario file or directory, exactly.
func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		paths []string
		want  string
	}{
		{
			name:  "unknown command with a suggestion",
			files: map[string]string{"d/myscen.txtar": "# s\nguest true\n\ngest echo hi\n"},
			paths: []string{"d"},
			want:  `d/myscen.txtar:4: unknown command "gest" (did you mean "guest"?)`,
		},
		{
			name:  "unknown command",
			files: map[string]string{"d/myscen.txtar": "# s\nfrobnicate x\n"},
			paths: []string{"d"},
			want:  `d/myscen.txtar:2: unknown command "frobnicate" (lab help scenarios lists them)`,
		},
		{
			name:  "unknown condition",
			files: map[string]string{"x.txtar": "# s\n[windoze] guest true\n"},
			paths: []string{"x.txtar"},
			want:  `x.txtar:2: unknown condition [windoze] (lab help scenarios lists them)`,
		},
		{
			name:  "broken file marker",
			files: map[string]string{"x.txtar": "# s\nguest true\ncmp stdout want\n\n-- want\nok\n"},
			paths: []string{"x.txtar"},
			want:  "x.txtar:5: \"-- want\" looks like a txtar file marker but is not one (want \"-- NAME --\")\nx.txtar:6: unknown command \"ok\" (lab help scenarios lists them)",
		},
		{
			name:  "file twice and an empty name",
			files: map[string]string{"x.txtar": "# s\nguest true\n-- a --\n1\n-- a --\n2\n--  --\n"},
			paths: []string{"x.txtar"},
			want:  "x.txtar:5: file \"a\" is in the archive twice (first at line 3)\nx.txtar:7: file marker with no file name (want \"-- NAME --\")",
		},
		{
			name:  "unterminated quote",
			files: map[string]string{"x.txtar": "# s\nguest 'echo hi\n"},
			paths: []string{"x.txtar"},
			want:  `x.txtar:2: unterminated quoted argument (a quote inside quotes is written '')`,
		},
		{
			name:  "no script",
			files: map[string]string{"x.txtar": "-- a --\nfile only\n"},
			paths: []string{"x.txtar"},
			want:  `x.txtar:1: no commands: a scenario starts with its script, then its files (-- NAME --); see lab help scenarios`,
		},
		{
			name:  "condition without command",
			files: map[string]string{"x.txtar": "# s\n[wine] !\n"},
			paths: []string{"x.txtar"},
			want:  `x.txtar:2: no command after the condition or !`,
		},
		{
			name:  "missing path",
			paths: []string{"nope"},
			want:  `scenarios: nope: no such file or directory`,
		},
		{
			name:  "empty dir",
			files: map[string]string{"d/notes.md": "x"},
			paths: []string{"d"},
			want:  `scenarios: d holds no .txtar files`,
		},
		{
			name:  "not txtar",
			files: map[string]string{"notes.md": "x"},
			paths: []string{"notes.md"},
			want:  `scenarios: notes.md: not a .txtar file (give a directory of them or a FILE.txtar)`,
		},
		{
			name:  "same name twice",
			files: map[string]string{"a/x.txtar": "# s\nguest true\n", "b/x.txtar": "# s\nguest true\n"},
			paths: []string{"a", "b"},
			want:  `scenarios: two scenarios are named "x": a/x.txtar and b/x.txtar (the name is the file name; rename one)`,
		},
		{
			name:  "every problem of every file",
			files: map[string]string{"d/a.txtar": "# s\nnope\n", "d/b.txtar": "# s\nguest 'x\n"},
			paths: []string{"d"},
			want:  "d/a.txtar:2: unknown command \"nope\" (lab help scenarios lists them)\nd/b.txtar:2: unterminated quoted argument (a quote inside quotes is written '')",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tt.files)
			t.Chdir(dir)
			_, err := Load(tt.paths)
			if err == nil {
				t.Fatalf("Load(%q) succeeded; want %q", tt.paths, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Load(%q):\n got %q\nwant %q", tt.paths, err.Error(), tt.want)
			}
		})
	}
}

// TestUserScenarios runs a user's directory: one scenario passes using a host program
// kept next to it ($SCENARIODIR), one fails and its report names FILE:LINE with
// expected vs got.
func TestUserScenarios(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"suite/ok.txtar": `# A host tool beside the scenario answers.
exec $SCENARIODIR/tools/answer.sh
stdout '^42$'
guest 'echo from the guest'
cmp stdout want

-- want --
from the guest
`,
		"suite/broken.txtar": `# The guest says something else.
guest 'echo one'
stdout one

# the wrong expectation
guest 'echo got'
cmp stdout want

-- want --
expected
`,
		"suite/tools/answer.sh": "#!/bin/sh\necho 42\n",
		"suite/README.md":       "not a scenario\n",
	})
	t.Chdir(dir)
	list, err := Load([]string{"suite"})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "broken" || list[1].Name != "ok" || list[1].Summary != "A host tool beside the scenario answers." {
		t.Fatalf("Load: %+v", list)
	}
	var progress bytes.Buffer
	env := Env{Guest: localGuest{t}, ShareGuest: "/guest/share"}
	rep, err := Run(context.Background(), env, Options{Scenarios: list, Progress: &progress, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Result{}
	for _, r := range rep.Results {
		got[r.Name] = r
	}
	if r := got["ok"]; r.Status != Pass || r.File != "suite/ok.txtar" {
		t.Errorf("ok: %s %s\n%s", r.Status, r.File, r.Log)
	}
	r := got["broken"]
	if r.Status != Fail || r.File != "suite/broken.txtar" {
		t.Fatalf("broken: %s %s\n%s", r.Status, r.File, r.Log)
	}
	for _, want := range []string{"> cmp stdout want", "-got\n", "+expected\n", "FAIL: suite/broken.txtar:7: stdout and want differ"} {
		if !strings.Contains(r.Log, want) {
			t.Errorf("failure log lacks %q:\n%s", want, r.Log)
		}
	}
	if strings.Contains(r.Log, "echo one") {
		t.Errorf("the failure log shows a phase that passed:\n%s", r.Log)
	}
	if !strings.Contains(progress.String(), "FAIL: suite/broken.txtar:7:") {
		t.Errorf("progress lacks the failing line:\n%s", progress.String())
	}
}

// TestBuiltinPaths: a failing built-in scenario is named builtin/NAME.txtar:LINE, not by
// the temporary file it ran from.
func TestBuiltinPaths(t *testing.T) {
	list, err := List()
	if err != nil {
		t.Fatal(err)
	}
	var one []Scenario
	for _, s := range list {
		if s.Name == "args" {
			one = append(one, s)
		}
	}
	// A guest that fails every command: the scenario fails on its first guest line.
	env := Env{Guest: failGuest{}, ShareGuest: "/guest/share"}
	rep, err := Run(context.Background(), env, Options{Scenarios: one, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Results[0]
	if r.Status != Fail || r.File != "builtin/args.txtar" || !strings.Contains(r.Log, "FAIL: builtin/args.txtar:") {
		t.Errorf("built-in failure: %s %s\n%s", r.Status, r.File, r.Log)
	}
}

func TestHelpText(t *testing.T) {
	h := HelpText()
	for _, c := range Commands {
		if !strings.Contains(h, "\n  "+c.Usage+"\n") {
			t.Errorf("help lacks the command %s", c.Usage)
		}
	}
	for _, c := range Conditions {
		if !strings.Contains(h, "["+c.Name+"]") {
			t.Errorf("help lacks the condition %s", c.Name)
		}
	}
	scen, _ := Example()
	if err := Lint("upper.txtar", scen); err != nil {
		t.Errorf("the worked example does not pass the checks: %v", err)
	}
	if !strings.Contains(h, "    expose $SCENARIODIR/upper.sh upper\n") {
		t.Errorf("help lacks the worked example:\n%s", h)
	}
}

// failGuest fails every command (exit 1) without running anything.
type failGuest struct{}

func (failGuest) Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	return 1, nil
}

func (failGuest) SFTP() (*sftp.Client, error) { return nil, errors.New("no sftp") }
