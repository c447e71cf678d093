package main

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"lab/scenarios"
)

// fakeMachines records what runParallel does with each machine.
type fakeMachines struct {
	mu       sync.Mutex
	suite    []string
	bootFail map[string]error
	runFail  map[string]error
	booted   []string
	ran      map[string][]string // machine -> scenarios it ran
	downs    []string
}

func (f *fakeMachines) hooks() parallelHooks {
	return parallelHooks{
		boot: func(ctx context.Context, name string) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			if err := f.bootFail[name]; err != nil {
				return err
			}
			f.booted = append(f.booted, name)
			return nil
		},
		run: func(ctx context.Context, name string, shard scenarios.ShardSpec) (*scenarios.Report, error) {
			if err := f.runFail[name]; err != nil {
				return nil, err
			}
			// The shard selection lab run --shard uses.
			var all []scenarios.Scenario
			for _, n := range f.suite {
				all = append(all, scenarios.Scenario{Name: n})
			}
			suite, part := scenarios.Select(all, scenarios.Options{Shard: &shard})
			rep := &scenarios.Report{Start: time.Unix(100, 0), Duration: time.Second, Suite: suite, Shard: &shard}
			var names []string
			for _, s := range part {
				rep.Results = append(rep.Results, scenarios.Result{Name: s.Name, Status: scenarios.Pass})
				names = append(names, s.Name)
			}
			f.mu.Lock()
			f.ran[name] = names
			f.mu.Unlock()
			return rep, nil
		},
		down: func(name string) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.downs = append(f.downs, name)
			return nil
		},
	}
}

func TestRunParallelSpreadsAndMerges(t *testing.T) {
	f := &fakeMachines{suite: []string{"a", "b", "c", "d", "e"}, ran: map[string][]string{}}
	names := parallelNames("ci", 2)
	if want := []string{"ci-p1", "ci-p2"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("names %v, want %v", names, want)
	}
	rep, err := runParallel(context.Background(), names, f.hooks())
	if err != nil {
		t.Fatal(err)
	}
	// Round robin over the sorted names: each machine a balanced part, none twice.
	if want := map[string][]string{"ci-p1": {"a", "c", "e"}, "ci-p2": {"b", "d"}}; !reflect.DeepEqual(f.ran, want) {
		t.Errorf("ran %v, want %v", f.ran, want)
	}
	var got []string
	for _, r := range rep.Results {
		got = append(got, r.Name)
	}
	if !reflect.DeepEqual(got, f.suite) || rep.Shard != nil {
		t.Errorf("merged report: %v (shard %v), want every scenario once in suite order", got, rep.Shard)
	}
	sort.Strings(f.downs)
	if !reflect.DeepEqual(f.downs, names) {
		t.Errorf("downs %v, want %v", f.downs, names)
	}
}

func TestRunParallelAlwaysDown(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name      string
		bootFail  map[string]error
		runFail   map[string]error
		wantErr   string
		wantDowns []string
	}{
		{"boot fails", map[string]error{"ci-p2": boom}, nil, "run --parallel: ci-p2: boom", []string{"ci-p1"}},
		{"run fails", nil, map[string]error{"ci-p1": boom}, "run --parallel: ci-p1: boom", []string{"ci-p1", "ci-p2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeMachines{suite: []string{"a", "b", "c"}, ran: map[string][]string{}, bootFail: tc.bootFail, runFail: tc.runFail}
			_, err := runParallel(context.Background(), parallelNames("ci", 2), f.hooks())
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("error %v, want %s", err, tc.wantErr)
			}
			sort.Strings(f.downs)
			sort.Strings(f.booted)
			// Every machine that booted is taken down; one that failed to boot cleaned up itself.
			if !slices.Equal(f.downs, f.booted) || !slices.Equal(f.downs, tc.wantDowns) {
				t.Errorf("downs %v, booted %v, want %v", f.downs, f.booted, tc.wantDowns)
			}
		})
	}
}

func TestPrefixWriter(t *testing.T) {
	var b bytes.Buffer
	var mu sync.Mutex
	w := &prefixWriter{mu: &mu, w: &b, prefix: "[x] "}
	w.Write([]byte("one\ntw"))
	w.Write([]byte("o\n"))
	if b.String() != "[x] one\n[x] two\n" {
		t.Errorf("%q", b.String())
	}
}
