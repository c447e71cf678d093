package scenarios

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ShardSpec is part K (1-based) of N of a suite.
type ShardSpec struct {
	K int `json:"k"`
	N int `json:"n"`
}

func (s ShardSpec) String() string { return fmt.Sprintf("%d/%d", s.K, s.N) }

// ParseShard parses K/N (1 ≤ K ≤ N).
func ParseShard(s string) (ShardSpec, error) {
	a, b, ok := strings.Cut(s, "/")
	k, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n < 1 || k < 1 || k > n {
		return ShardSpec{}, fmt.Errorf("--shard %q: want K/N with 1 <= K <= N, e.g. 2/4", s)
	}
	return ShardSpec{K: k, N: n}, nil
}

// Assign splits names into n shards, deterministically: with durations (from an earlier
// report), greedy longest-first bin packing (each scenario, longest first, goes to the
// shard with the least time so far; a scenario without a recorded duration counts as the
// mean of the recorded ones); without, round robin over the sorted names. Ties go to the
// lower name and the lower shard. shards[i] is shard i+1, each in name order.
func Assign(names []string, n int, durations map[string]time.Duration) [][]string {
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	shards := make([][]string, n)
	var known []time.Duration
	for _, name := range sorted {
		if d, ok := durations[name]; ok {
			known = append(known, d)
		}
	}
	if len(known) == 0 {
		for i, name := range sorted {
			shards[i%n] = append(shards[i%n], name)
		}
		return shards
	}
	var sum time.Duration
	for _, d := range known {
		sum += d
	}
	mean := sum / time.Duration(len(known))
	weight := func(name string) time.Duration {
		if d, ok := durations[name]; ok {
			return d
		}
		return mean
	}
	sort.SliceStable(sorted, func(i, j int) bool { return weight(sorted[i]) > weight(sorted[j]) })
	load := make([]time.Duration, n)
	for _, name := range sorted {
		best := 0
		for i := 1; i < n; i++ {
			if load[i] < load[best] {
				best = i
			}
		}
		load[best] += weight(name)
		shards[best] = append(shards[best], name)
	}
	for _, s := range shards {
		sort.Strings(s)
	}
	return shards
}

// Durations returns each scenario's time in a report (for Assign).
func (r *Report) Durations() map[string]time.Duration {
	m := map[string]time.Duration{}
	for _, x := range r.Results {
		m[x.Name] = x.Duration
	}
	return m
}

// ReadJSON reads a report written by WriteJSON (lab run --json).
func ReadJSON(rd io.Reader) (*Report, error) {
	var r Report
	dec := json.NewDecoder(rd)
	if err := dec.Decode(&r); err != nil {
		return nil, err
	}
	return &r, nil
}

// ReadJSONFile reads a report file; errors name the file.
func ReadJSONFile(file string) (*Report, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	defer f.Close()
	r, err := ReadJSON(f)
	if err != nil {
		return nil, fmt.Errorf("report: %s is not a lab run --json report: %w", file, err)
	}
	return r, nil
}

// Merge combines the reports of every shard of one suite (files name them in errors)
// into the report of the whole suite, in suite order. It refuses reports of different
// suites or shard counts, a shard given twice or missing, and a scenario reported twice.
func Merge(files []string, reps []*Report) (*Report, error) {
	if len(reps) == 0 || len(files) != len(reps) {
		return nil, fmt.Errorf("report merge: no reports")
	}
	shardOf := func(r *Report) ShardSpec {
		if r.Shard == nil {
			return ShardSpec{K: 1, N: 1}
		}
		return *r.Shard
	}
	first := shardOf(reps[0])
	byK := map[int]string{}
	seen := map[string]string{}
	out := &Report{Suite: reps[0].Suite, Machine: mergeMachines(reps)}
	inSuite := map[string]bool{}
	for _, n := range out.Suite {
		inSuite[n] = true
	}
	var end time.Time
	for i, r := range reps {
		s := shardOf(r)
		if s.N != first.N {
			return nil, fmt.Errorf("report merge: %s is shard %s but %s is shard %s: shards of different runs", files[0], first, files[i], s)
		}
		if !slices.Equal(r.Suite, out.Suite) {
			return nil, fmt.Errorf("report merge: %s and %s were cut from different suites (%s)", files[0], files[i], suiteDiff(out.Suite, r.Suite))
		}
		if f, dup := byK[s.K]; dup {
			return nil, fmt.Errorf("report merge: %s and %s are both shard %s", f, files[i], s)
		}
		byK[s.K] = files[i]
		for _, x := range r.Results {
			if f, dup := seen[x.Name]; dup {
				return nil, fmt.Errorf("report merge: scenario %s is in both %s and %s", x.Name, f, files[i])
			}
			if len(out.Suite) > 0 && !inSuite[x.Name] {
				return nil, fmt.Errorf("report merge: %s reports %s, which is not in its suite", files[i], x.Name)
			}
			seen[x.Name] = files[i]
			out.Results = append(out.Results, x)
		}
		if out.Start.IsZero() || r.Start.Before(out.Start) {
			out.Start = r.Start
		}
		if e := r.Start.Add(r.Duration); e.After(end) {
			end = e
		}
	}
	for k := 1; k <= first.N; k++ {
		if _, ok := byK[k]; !ok {
			return nil, fmt.Errorf("report merge: shard %d/%d is missing (given: %s)", k, first.N, strings.Join(files, ", "))
		}
	}
	for _, n := range out.Suite {
		if _, ok := seen[n]; !ok {
			return nil, fmt.Errorf("report merge: scenario %s of the suite is in no shard's report", n)
		}
	}
	order := map[string]int{}
	for i, n := range out.Suite {
		order[n] = i
	}
	sort.SliceStable(out.Results, func(i, j int) bool {
		a, b := out.Results[i].Name, out.Results[j].Name
		if order[a] != order[b] {
			return order[a] < order[b]
		}
		return a < b
	})
	out.Duration = end.Sub(out.Start)
	return out, nil
}

// suiteDiff names one scenario that is in one suite and not the other.
func suiteDiff(a, b []string) string {
	in := func(l []string, s string) bool {
		for _, x := range l {
			if x == s {
				return true
			}
		}
		return false
	}
	for _, s := range a {
		if !in(b, s) {
			return "only the first has " + s
		}
	}
	for _, s := range b {
		if !in(a, s) {
			return "only the second has " + s
		}
	}
	return "the same scenarios in another order"
}
