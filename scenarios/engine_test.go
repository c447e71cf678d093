package scenarios

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
)

// localGuest runs commands with the host's /bin/sh and serves SFTP from the host's file
// system: enough to test the engine, never a stand-in for a VM in the real suite.
type localGuest struct{ t *testing.T }

func (g localGuest) Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	c := exec.CommandContext(ctx, "/bin/sh", "-c", cmd)
	c.Stdin, c.Stdout, c.Stderr = stdin, stdout, stderr
	err := c.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), nil
	}
	return 0, err
}

func (g localGuest) SFTP() (*sftp.Client, error) {
	cr, sw := io.Pipe()
	sr, cw := io.Pipe()
	srv, err := sftp.NewServer(struct {
		io.Reader
		io.WriteCloser
	}{sr, sw})
	if err != nil {
		return nil, err
	}
	go srv.Serve()
	c, err := sftp.NewClientPipe(cr, cw)
	if err != nil {
		return nil, err
	}
	g.t.Cleanup(func() { srv.Close(); sw.Close(); cw.Close(); c.Close() })
	return c, nil
}

func TestEngine(t *testing.T) {
	files, err := filepath.Glob("testdata/engine/*.txtar")
	if err != nil || len(files) != 3 {
		t.Fatalf("engine scenarios: %v %v", files, err)
	}
	env := Env{
		Guest:      localGuest{t},
		ShareGuest: "/guest/share",
		Stub:       func(name string) []byte { return []byte("STUB " + name + "\n") },
		RelayLog:   func(time.Time) []string { return []string{"level=INFO msg=launch name=host-x"} },
	}
	var progress bytes.Buffer
	rep, err := RunFiles(context.Background(), env, Options{Progress: &progress, Timeout: time.Minute}, files)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Result{}
	for _, r := range rep.Results {
		got[r.Name] = r
	}
	if r := got["fail"]; r.Summary != "A wrong expectation fails and shows expected vs got." {
		t.Errorf("summary %q", r.Summary)
	}
	if r := got["pass"]; r.Status != Pass {
		t.Errorf("pass: %s\n%s", r.Status, r.Log)
	}
	if r := got["skip"]; r.Status != Skip || !strings.Contains(r.Log, "no wine here") {
		t.Errorf("skip: %s\n%s", r.Status, r.Log)
	}
	r := got["fail"]
	if r.Status != Fail {
		t.Fatalf("fail: %s\n%s", r.Status, r.Log)
	}
	for _, want := range []string{"> guest echo got", "FAIL:", "+expected", "-got"} {
		if !strings.Contains(r.Log, want) {
			t.Errorf("failure log lacks %q:\n%s", want, r.Log)
		}
	}
	if !strings.Contains(progress.String(), "FAIL fail") || !strings.Contains(progress.String(), "+expected") {
		t.Errorf("progress does not show the failure:\n%s", progress.String())
	}
	if p, f, s := rep.Counts(); p != 1 || f != 1 || s != 1 || rep.OK() {
		t.Errorf("counts %d %d %d, OK %v", p, f, s, rep.OK())
	}

	var tap bytes.Buffer
	rep.WriteTAP(&tap)
	for _, want := range []string{"TAP version 13\n1..3\n", "not ok 1 - fail\n", "ok 2 - pass\n", "ok 3 - skip # SKIP"} {
		if !strings.Contains(tap.String(), want) {
			t.Errorf("TAP lacks %q:\n%s", want, tap.String())
		}
	}
	var junit bytes.Buffer
	if err := rep.WriteJUnit(&junit); err != nil {
		t.Fatal(err)
	}
	var js junitSuites
	if err := xml.Unmarshal(junit.Bytes(), &js); err != nil {
		t.Fatalf("JUnit does not parse: %v\n%s", err, junit.String())
	}
	if s := js.Suites[0]; s.Tests != 3 || s.Failures != 1 || s.Skipped != 1 || s.Cases[0].Failure == nil {
		t.Fatalf("JUnit suite %+v", s)
	}
	// What a CI UI shows of the failure: where, which command, expected vs got, and the
	// relay's log lines beside it.
	c := js.Suites[0].Cases[0]
	if c.File != "testdata/engine/fail.txtar" || c.Line != 3 || c.Time == "" {
		t.Errorf("JUnit case: file %q line %d time %q", c.File, c.Line, c.Time)
	}
	if f := c.Failure; f.Message != "testdata/engine/fail.txtar:3: stdout and want differ" || f.Type != "cmp stdout want" ||
		!strings.Contains(f.Body, "-got\n+expected") {
		t.Errorf("JUnit failure: message %q type %q body:\n%s", f.Message, f.Type, f.Body)
	}
	if c.SystemOut == nil || !strings.Contains(c.SystemOut.Text, "relay log:\nlevel=INFO msg=launch name=host-x\n") {
		t.Errorf("JUnit system-out: %+v", c.SystemOut)
	}
	var jb bytes.Buffer
	if err := rep.WriteJSON(&jb); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Results []Result
		Failed  int
	}
	if err := json.Unmarshal(jb.Bytes(), &back); err != nil || back.Failed != 1 || len(back.Results) != 3 {
		t.Errorf("JSON: %v %+v", err, back)
	}
	var table bytes.Buffer
	rep.WriteTable(&table)
	if !strings.Contains(table.String(), "1 passed, 1 failed, 1 skipped") {
		t.Errorf("table:\n%s", table.String())
	}
}

func TestBuiltinScenariosParse(t *testing.T) {
	list, err := List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) < 20 {
		t.Fatalf("only %d scenarios", len(list))
	}
	for _, s := range list {
		if s.Summary == "" {
			t.Errorf("%s: no summary comment on its first line", s.Name)
		}
		b, err := scenarioFS.ReadFile("testdata/" + s.Name + ".txtar")
		if err != nil {
			t.Fatal(err)
		}
		if err := Lint(BuiltinPrefix+s.Name+".txtar", b); err != nil {
			t.Error(err)
		}
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		name     string
		patterns []string
		want     bool
	}{
		{"stdin_pipe", nil, true},
		{"stdin_pipe", []string{"stdin"}, true},
		{"stdin_pipe", []string{"std*pipe"}, true},
		{"stdin_pipe", []string{"tty"}, false},
	}
	for _, tt := range tests {
		if got := Match(tt.name, tt.patterns); got != tt.want {
			t.Errorf("Match(%q, %q) = %v", tt.name, tt.patterns, got)
		}
	}
}
