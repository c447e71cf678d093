package scenarios

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/merge/*.golden")

func TestParseShard(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want ShardSpec
		err  string
	}{
		{in: "1/1", want: ShardSpec{1, 1}},
		{in: "3/4", want: ShardSpec{3, 4}},
		{in: "0/2", err: `--shard "0/2": want K/N with 1 <= K <= N, e.g. 2/4`},
		{in: "3/2", err: `--shard "3/2": want K/N with 1 <= K <= N, e.g. 2/4`},
		{in: "2", err: `--shard "2": want K/N with 1 <= K <= N, e.g. 2/4`},
	} {
		got, err := ParseShard(tt.in)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("ParseShard(%q) = %v, %v; want %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseShard(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

// Every scenario is in exactly one shard, for N = 1..5, with and without durations,
// and the split is the same every time.
func TestAssignPartitions(t *testing.T) {
	list, err := List()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range list {
		names = append(names, s.Name)
	}
	// Recorded durations for most (not all: new scenarios have none yet).
	durations := map[string]time.Duration{}
	for i, n := range names {
		if i%7 != 3 {
			durations[n] = time.Duration((i*37)%23+1) * 100 * time.Millisecond
		}
	}
	for _, d := range []map[string]time.Duration{nil, durations} {
		for n := 1; n <= 5; n++ {
			t.Run(fmt.Sprintf("N=%d,durations=%v", n, d != nil), func(t *testing.T) {
				shards := Assign(names, n, d)
				if len(shards) != n {
					t.Fatalf("%d shards; want %d", len(shards), n)
				}
				count := map[string]int{}
				for _, s := range shards {
					for _, name := range s {
						count[name]++
					}
				}
				for _, name := range names {
					if count[name] != 1 {
						t.Errorf("%s is in %d shards", name, count[name])
					}
				}
				if len(count) != len(names) {
					t.Errorf("shards hold %d names; the suite has %d", len(count), len(names))
				}
				if again := Assign(names, n, d); !reflect.DeepEqual(again, shards) {
					t.Errorf("not deterministic:\n%v\n%v", shards, again)
				}
				// Balanced: by count without durations; with them, the greedy bound
				// (the fullest shard exceeds the emptiest by at most one scenario).
				lo, hi, longest := time.Duration(1<<62), time.Duration(0), time.Duration(0)
				for _, s := range shards {
					var load time.Duration
					for _, name := range s {
						w, ok := d[name]
						if d == nil {
							w = 1
						} else if !ok {
							w = meanOf(d)
						}
						load += w
						longest = max(longest, w)
					}
					lo, hi = min(lo, load), max(hi, load)
				}
				if hi-lo > longest {
					t.Errorf("unbalanced: loads %v..%v, longest scenario %v: %v", lo, hi, longest, shards)
				}
			})
		}
	}
}

func meanOf(d map[string]time.Duration) time.Duration {
	var s time.Duration
	for _, v := range d {
		s += v
	}
	return s / time.Duration(len(d))
}

func TestAssignExact(t *testing.T) {
	names := []string{"e", "d", "c", "b", "a"}
	if got, want := Assign(names, 2, nil), [][]string{{"a", "c", "e"}, {"b", "d"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("round robin: %v; want %v", got, want)
	}
	d := map[string]time.Duration{"a": 10, "b": 9, "c": 5, "d": 4, "e": 1}
	// Longest first: a→1 (10), b→2 (9), c→2 (14), d→1 (14), e→1 (tie: the lower shard).
	if got, want := Assign(names, 2, d), [][]string{{"a", "d", "e"}, {"b", "c"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("by durations: %v; want %v", got, want)
	}
	// f has no recorded time: it weighs the mean (29/5 ns → 5) and sorts after c (same weight, name).
	if got, want := Assign(append(names, "f"), 3, d), [][]string{{"a", "e"}, {"b", "d"}, {"c", "f"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("with an unknown duration: %v; want %v", got, want)
	}
}

// shardReports are two shard reports of a five-scenario suite, one failure.
func shardReports() []*Report {
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	suite := []string{"args", "bad_token", "mine", "stdin_pipe", "tty_mode"}
	return []*Report{
		{Start: t0, Duration: 3 * time.Second, Suite: suite, Shard: &ShardSpec{1, 2}, Results: []Result{
			{Name: "args", File: "builtin/args.txtar", Summary: "Arguments cross exactly.", Status: Pass, Duration: 500 * time.Millisecond},
			{Name: "mine", File: "suite/mine.txtar", Summary: "My tool answers.", Status: Fail, Duration: 1200 * time.Millisecond,
				Log:      "# the answer\n> guest 'mytool'\n[stdout]\n41\n> stdout '^42$'\nFAIL: suite/mine.txtar:3: no match for `^42$` found in stdout\n",
				RelayLog: []string{"time=2026-12-05T10:00:01Z level=INFO msg=launch name=mytool"},
				GuestLog: []string{"[   12.5] random: crng init done"}},
			{Name: "tty_mode", File: "builtin/tty_mode.txtar", Summary: "A terminal crosses.", Status: Pass, Duration: 300 * time.Millisecond},
		}},
		{Start: t0.Add(time.Second), Duration: 4 * time.Second, Suite: suite, Shard: &ShardSpec{2, 2}, Results: []Result{
			{Name: "bad_token", File: "builtin/bad_token.txtar", Summary: "A wrong token is refused.", Status: Pass, Duration: 100 * time.Millisecond},
			{Name: "stdin_pipe", File: "builtin/stdin_pipe.txtar", Summary: "Stdin is piped.", Status: Skip, Duration: 10 * time.Millisecond, Log: "[!wine] skip\nno wine here\n"},
		}},
	}
}

// TestMergeGolden: shard reports written as JSON, read back and merged, give the
// whole suite's report (JSON, table, JUnit) in suite order.
func TestMergeGolden(t *testing.T) {
	dir := t.TempDir()
	var files []string
	var reps []*Report
	for i, r := range shardReports() {
		f := filepath.Join(dir, fmt.Sprintf("shard%d.json", i+1))
		var b bytes.Buffer
		if err := r.WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		back, err := ReadJSONFile(f)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		reps = append(reps, back)
	}
	// The order of the files does not matter.
	files[0], files[1], reps[0], reps[1] = files[1], files[0], reps[1], reps[0]
	m, err := Merge(files, reps)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	out.WriteString("== table\n")
	m.WriteTable(&out)
	out.WriteString("== json\n")
	m.WriteJSON(&out)
	out.WriteString("== junit\n")
	m.WriteJUnit(&out)
	golden := filepath.Join("testdata", "merge", "merged.golden")
	if *updateGolden {
		os.MkdirAll(filepath.Dir(golden), 0o755)
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test ./scenarios -run TestMergeGolden -update-golden)", err)
	}
	if got := out.String(); got != string(want) {
		t.Errorf("merged report differs from %s (-update-golden rewrites it):\n%s", golden, got)
	}
}

func TestMergeErrors(t *testing.T) {
	files := []string{"a.json", "b.json"}
	tests := []struct {
		name   string
		change func(r []*Report) []*Report
		want   string
	}{
		{"missing shard", func(r []*Report) []*Report { return r[:1] },
			"report merge: shard 2/2 is missing (given: a.json)"},
		{"same shard twice", func(r []*Report) []*Report { r[1].Shard = &ShardSpec{1, 2}; return r },
			"report merge: a.json and b.json are both shard 1/2"},
		{"scenario twice", func(r []*Report) []*Report { r[1].Results = append(r[1].Results, r[0].Results[0]); return r },
			"report merge: scenario args is in both a.json and b.json"},
		{"other shard count", func(r []*Report) []*Report { r[1].Shard = &ShardSpec{2, 3}; return r },
			"report merge: a.json is shard 1/2 but b.json is shard 2/3: shards of different runs"},
		{"other suite", func(r []*Report) []*Report { r[1].Suite = append(r[1].Suite[:4:4], "zz"); return r },
			"report merge: a.json and b.json were cut from different suites (only the first has tty_mode)"},
		{"a scenario lost", func(r []*Report) []*Report { r[1].Results = r[1].Results[:1]; return r },
			"report merge: scenario stdin_pipe of the suite is in no shard's report"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reps := tt.change(shardReports())
			_, err := Merge(files[:len(reps)], reps)
			if err == nil || err.Error() != tt.want {
				t.Errorf("Merge: %v; want %q", err, tt.want)
			}
		})
	}
}

// Run with a shard runs its part only and records the suite and the shard.
func TestRunShard(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{}
	for _, n := range []string{"a", "b", "c"} {
		files["s/"+n+".txtar"] = "# " + n + "\nguest 'echo " + n + "'\nstdout " + n + "\n"
	}
	writeFiles(t, dir, files)
	t.Chdir(dir)
	list, err := Load([]string{"s"})
	if err != nil {
		t.Fatal(err)
	}
	env := Env{Guest: localGuest{t}}
	var got []string
	for k := 1; k <= 2; k++ {
		rep, err := Run(t.Context(), env, Options{Scenarios: list, Shard: &ShardSpec{k, 2}, Timeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(rep.Suite, ",") != "a,b,c" || *rep.Shard != (ShardSpec{k, 2}) {
			t.Errorf("shard %d: suite %v shard %v", k, rep.Suite, rep.Shard)
		}
		for _, r := range rep.Results {
			got = append(got, fmt.Sprintf("%d:%s:%s", k, r.Name, r.Status))
		}
	}
	if want := "1:a:pass 1:c:pass 2:b:pass"; strings.Join(got, " ") != want {
		t.Errorf("shards ran %q; want %q", strings.Join(got, " "), want)
	}
	// More shards than scenarios: an empty report, not an error.
	rep, err := Run(t.Context(), env, Options{Scenarios: list, Shard: &ShardSpec{4, 4}, Timeout: time.Minute})
	if err != nil || len(rep.Results) != 0 || len(rep.Suite) != 3 {
		t.Errorf("shard 4/4 of 3: %v %+v", err, rep)
	}
}
