package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"lab/scenarios"
)

// runApp runs the command tree in-process and returns stdout and the error.
func runApp(t *testing.T, args ...string) (string, error) {
	t.Helper()
	app := newApp()
	app.SetArgs(args)
	var out bytes.Buffer
	app.SetOut(&out)
	app.SetErr(new(discard))
	err := app.Execute()
	return out.String(), err
}

// lab run checks a user's files before it looks for a VM: a typo is FILE:LINE.
func TestRunScenariosChecksFilesFirst(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	os.Mkdir("mine", 0o755)
	os.WriteFile(filepath.Join("mine", "myscen.txtar"), []byte("# mine\nguest true\ngeust false\n"), 0o644)
	_, err := runApp(t, "run", "--name", "no-such-vm", "--scenarios", "mine")
	want := `mine/myscen.txtar:3: unknown command "geust" (did you mean "guest"?)`
	if err == nil || err.Error() != want {
		t.Errorf("lab run --scenarios mine: %v; want %q", err, want)
	}
	if got := exitCode(err); got != 1 {
		t.Errorf("exit %d; want 1", got)
	}
}

func TestRunListScenarios(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	os.WriteFile("one.txtar", []byte("# One thing works.\nguest true\n"), 0o644)
	out, err := runApp(t, "run", "--list", "--scenarios", "one.txtar")
	if err != nil || strings.TrimSpace(out) != "one                      One thing works." {
		t.Errorf("lab run --list --scenarios one.txtar = %q, %v", out, err)
	}
	out, err = runApp(t, "run", "--list", "--scenarios", "one.txtar", "--builtin")
	if err != nil || !strings.Contains(out, "\none ") || !strings.Contains(out, "stdin_pipe ") {
		t.Errorf("with --builtin: %q, %v", out, err)
	}
	out, err = runApp(t, "help", "scenarios")
	if err != nil || !strings.Contains(out, "guest [-stdin FILE]") || !strings.Contains(out, "$SCENARIODIR") {
		t.Errorf("lab help scenarios: %v\n%s", err, out)
	}
}

func TestRunListShard(t *testing.T) {
	all, err := runApp(t, "run", "--list")
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for k := 1; k <= 3; k++ {
		out, err := runApp(t, "run", "--list", "--shard", fmt.Sprintf("%d/3", k))
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, strings.Split(strings.TrimSpace(out), "\n")...)
	}
	sort.Strings(parts)
	if got, want := strings.Join(parts, "\n"), strings.TrimSpace(all); got != want {
		t.Errorf("the three shards list:\n%s\nthe suite is:\n%s", got, want)
	}
	_, err = runApp(t, "run", "--list", "--shard", "3/2")
	if want := `--shard "3/2": want K/N with 1 <= K <= N, e.g. 2/4`; err == nil || err.Error() != want || exitCode(err) != 2 {
		t.Errorf("--shard 3/2: %v (exit %d); want %q, exit 2", err, exitCode(err), want)
	}
}

func TestReportMerge(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	suite := []string{"a", "b", "c"}
	write := func(file string, r *scenarios.Report) {
		var b bytes.Buffer
		if err := r.WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(file, b.Bytes(), 0o644)
	}
	write("s1.json", &scenarios.Report{Start: t0, Duration: time.Second, Suite: suite, Shard: &scenarios.ShardSpec{K: 1, N: 2}, Results: []scenarios.Result{
		{Name: "a", Status: scenarios.Pass, Duration: time.Second}, {Name: "c", Status: scenarios.Pass}}})
	write("s2.json", &scenarios.Report{Start: t0, Duration: 2 * time.Second, Suite: suite, Shard: &scenarios.ShardSpec{K: 2, N: 2}, Results: []scenarios.Result{
		{Name: "b", Status: scenarios.Fail, Log: "FAIL: x.txtar:2: boom\n"}}})
	out, err := runApp(t, "report", "merge", "s2.json", "s1.json", "--junit", "all.xml", "--json", "all.json")
	if exitCode(err) != 1 || !strings.Contains(out, "2 passed, 1 failed, 0 skipped in 2.0s") {
		t.Errorf("merge with a failure: exit %d (%v)\n%s", exitCode(err), err, out)
	}
	merged, err := scenarios.ReadJSONFile("all.json")
	if err != nil || len(merged.Results) != 3 || merged.Results[1].Name != "b" || merged.Shard != nil {
		t.Errorf("merged JSON: %v %+v", err, merged)
	}
	if x, err := os.ReadFile("all.xml"); err != nil || !strings.Contains(string(x), `tests="3" failures="1"`) {
		t.Errorf("merged JUnit: %v\n%s", err, x)
	}
	_, err = runApp(t, "report", "merge", "s1.json")
	if want := "report merge: shard 2/2 is missing (given: s1.json)"; err == nil || err.Error() != want || exitCode(err) != 1 {
		t.Errorf("one shard of two: %v; want %q", err, want)
	}
	_, err = runApp(t, "report", "merge", "nope.json")
	if want := "report: open nope.json: no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("missing file: %v; want %q", err, want)
	}
}
