// Package ci holds the CI recipes for lab's scenario suite (github-workflow.yml,
// gitlab-ci.yml); its test checks them so that the recipes the README shows work.
package ci

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rhysd/actionlint"
	yaml "go.yaml.in/yaml/v4"
)

// TestGitHubWorkflowLints runs actionlint (syntax, expressions, action inputs, job
// dependencies, and shellcheck on run: scripts when shellcheck is installed).
func TestGitHubWorkflowLints(t *testing.T) {
	var out bytes.Buffer
	opts := &actionlint.LinterOptions{Oneline: true}
	if p, err := exec.LookPath("shellcheck"); err == nil {
		opts.Shellcheck = p
	} else {
		t.Log("shellcheck is not installed: run: scripts are not checked")
	}
	l, err := actionlint.NewLinter(&out, opts)
	if err != nil {
		t.Fatal(err)
	}
	errs, err := l.LintFile("github-workflow.yml", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range errs {
		t.Errorf("%s", e.Error())
	}
}

type doc = map[string]any

func load(t *testing.T, file string) doc {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var d doc
	if err := yaml.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s is not YAML: %v", file, err)
	}
	return d
}

func get(t *testing.T, d any, path ...string) any {
	t.Helper()
	for _, k := range path {
		m, ok := d.(doc)
		if !ok {
			t.Fatalf("%s: not a mapping at %q", strings.Join(path, "."), k)
		}
		if d, ok = m[k]; !ok {
			t.Fatalf("no %s", strings.Join(path, "."))
		}
	}
	return d
}

// scripts joins every run: (GitHub) or script: line (GitLab) of a job.
func scripts(job any) string {
	var b strings.Builder
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case doc:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "run") {
					b.WriteString(s + "\n")
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(job)
	if m, ok := job.(doc); ok {
		for _, k := range []string{"script", "after_script"} {
			if l, ok := m[k].([]any); ok {
				for _, s := range l {
					b.WriteString(s.(string) + "\n")
				}
			}
		}
	}
	return b.String()
}

func TestGitHubWorkflowShape(t *testing.T) {
	w := load(t, "github-workflow.yml")
	shards := get(t, w, "env", "SHARDS")
	matrix := get(t, w, "jobs", "scenarios", "strategy", "matrix", "shard").([]any)
	if len(matrix) != shards.(int) {
		t.Errorf("the matrix has %d shards; SHARDS is %v", len(matrix), shards)
	}
	run := scripts(get(t, w, "jobs", "scenarios"))
	for _, want := range []string{"bin/lab image key", "bin/lab up", "--shard ${{ matrix.shard }}/$SHARDS", "--durations report.json", "--junit shard-", "bin/lab down"} {
		if !strings.Contains(run, want) {
			t.Errorf("the scenarios job does not run %q", want)
		}
	}
	if key := get(t, w, "jobs", "scenarios", "steps"); !strings.Contains(strings.Join(strings.Fields(toString(key)), " "), "key: ${{ steps.image.outputs.key }}") {
		t.Errorf("the image cache is not keyed by lab image key")
	}
	if r := scripts(get(t, w, "jobs", "report")); !strings.Contains(r, "bin/lab report merge shard-*.json --junit report.xml --json report.json") {
		t.Errorf("the report job does not merge the shards:\n%s", r)
	}
	if n := get(t, w, "jobs", "report", "needs"); n != "scenarios" {
		t.Errorf("report needs %v", n)
	}
}

func TestGitLabCIShape(t *testing.T) {
	d := load(t, "gitlab-ci.yml")
	for _, job := range []string{"plan", "scenarios", "report"} {
		get(t, d, job, "script")
	}
	if p := get(t, d, "scenarios", "parallel"); p != 4 {
		t.Errorf("scenarios: parallel %v", p)
	}
	if j := get(t, d, "scenarios", "artifacts", "reports", "junit"); j != "shard-*.xml" {
		t.Errorf("scenarios: junit report %v", j)
	}
	run := scripts(get(t, d, "scenarios"))
	for _, want := range []string{"bin/lab up", "--shard $CI_NODE_INDEX/$CI_NODE_TOTAL --durations durations.json", "bin/lab image key"} {
		if !strings.Contains(run, want) {
			t.Errorf("the scenarios job does not run %q:\n%s", want, run)
		}
	}
	if r := scripts(get(t, d, "report")); !strings.Contains(r, "bin/lab report merge shard-*.json --junit report.xml --json report.json") {
		t.Errorf("the report job does not merge the shards:\n%s", r)
	}
}

// TestRecipesRunLab runs each recipe's lab run command line with --list: its flags,
// scenario directories and durations file work with this lab.
func TestRecipesRunLab(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	lab := filepath.Join(t.TempDir(), "lab")
	build := exec.Command("go", "build", "-o", lab, "./cmd/lab")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	durations := filepath.Join(t.TempDir(), "report.json")
	os.WriteFile(durations, []byte("{}\n"), 0o644)
	vars := map[string]string{
		"$SHARDS": "4", "${{ matrix.shard }}": "2", "$CI_NODE_INDEX": "2", "$CI_NODE_TOTAL": "4",
	}
	runLine := regexp.MustCompile(`bin/lab run ([^>]*)>`)
	for _, file := range []string{"github-workflow.yml", "gitlab-ci.yml"} {
		d := load(t, file)
		var lv, job any
		if file == "github-workflow.yml" {
			lv, job = get(t, d, "env"), get(t, d, "jobs", "scenarios")
		} else {
			lv, job = get(t, d, "variables"), get(t, d, "scenarios")
		}
		vars["$LAB_SCENARIOS"] = lv.(doc)["LAB_SCENARIOS"].(string)
		m := runLine.FindStringSubmatch(strings.ReplaceAll(scripts(job), "\\\n", " "))
		if m == nil {
			t.Fatalf("%s: no bin/lab run line", file)
		}
		line := m[1]
		line = strings.NewReplacer("--durations report.json", "--durations "+durations, "--durations durations.json", "--durations "+durations).Replace(line)
		for _, k := range []string{"$LAB_SCENARIOS", "$SHARDS", "${{ matrix.shard }}", "$CI_NODE_INDEX", "$CI_NODE_TOTAL"} {
			line = strings.ReplaceAll(line, k, vars[k])
		}
		args := append(strings.Fields(line), "--list")
		c := exec.Command(lab, append([]string{"run"}, args...)...)
		c.Dir = root
		out, err := c.CombinedOutput()
		if err != nil {
			t.Errorf("%s: lab run %s: %v\n%s", file, strings.Join(args, " "), err, out)
			continue
		}
		// Shard 2 of 4 of the built-ins and the example: about a quarter of them.
		if n := len(strings.Split(strings.TrimSpace(string(out)), "\n")); n < 5 {
			t.Errorf("%s: lab run %s lists %d scenarios:\n%s", file, strings.Join(args, " "), n, out)
		}
	}
}

func toString(v any) string {
	b, _ := yaml.Marshal(v)
	return string(b)
}
