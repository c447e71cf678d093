package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"lab/machine"
	"lab/scenarios"
	"lab/scenarios/suite"
)

// parallelNames are the machines of lab run --parallel N: BASE-p1 ... BASE-pN.
func parallelNames(base string, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-p%d", base, i+1)
	}
	return names
}

// parallelHooks are what runParallel does with one machine (real VMs in lab run, fakes in
// unit tests).
type parallelHooks struct {
	// boot starts and provisions the machine; on failure nothing of it may be left running.
	boot func(ctx context.Context, name string) error
	// run runs shard of the suite on the machine.
	run func(ctx context.Context, name string, shard scenarios.ShardSpec) (*scenarios.Report, error)
	// down stops the machine; it is called for every machine whose boot succeeded.
	down func(name string) error
}

// runParallel boots one machine per name at once, runs shard K of N (the --shard
// selection, so each machine gets a balanced part) on machine K as soon as it is up, takes
// every machine down whatever happened, and merges the shards' reports into one. A failed
// boot or run cancels the others and is the error (with any failure to stop a machine).
func runParallel(ctx context.Context, names []string, h parallelHooks) (*scenarios.Report, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := len(names)
	reps := make([]*scenarios.Report, n)
	errs := make([]error, n)
	var mu sync.Mutex
	var booted []string
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.boot(ctx, name); err != nil {
				errs[i] = fmt.Errorf("%s: %w", name, err)
				cancel()
				return
			}
			mu.Lock()
			booted = append(booted, name)
			mu.Unlock()
			rep, err := h.run(ctx, name, scenarios.ShardSpec{K: i + 1, N: n})
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", name, err)
				cancel()
				return
			}
			reps[i] = rep
		}()
	}
	wg.Wait()
	var downErrs []error
	for _, name := range booted {
		if err := h.down(name); err != nil {
			downErrs = append(downErrs, fmt.Errorf("%s: lab down: %w", name, err))
		}
	}
	var runErrs []error
	for _, err := range errs {
		// A machine cancelled because another failed says only that; keep the cause.
		if err != nil && !errors.Is(err, context.Canceled) {
			runErrs = append(runErrs, err)
		}
	}
	if len(runErrs) == 0 {
		for _, err := range errs {
			if err != nil {
				runErrs = append(runErrs, err)
			}
		}
	}
	if err := errors.Join(append(runErrs, downErrs...)...); err != nil {
		return nil, fmt.Errorf("run --parallel: %w", err)
	}
	return scenarios.Merge(names, reps)
}

// prefixWriter writes each complete line to w with a prefix, one Write per line, under a
// lock shared by the writers of one run, so that machines' progress lines never mix.
type prefixWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		line := append([]byte(p.prefix), p.buf[:i+1]...)
		p.buf = p.buf[i+1:]
		p.mu.Lock()
		_, err := p.w.Write(line)
		p.mu.Unlock()
		if err != nil {
			return len(b), err
		}
	}
}

// parallelOptions are lab run --parallel's settings.
type parallelOptions struct {
	n      int    // machines
	name   string // base name (--name, else the lab file's name)
	file   string // lab file, or ""
	interp string // lab-interop for the guests
	opts   scenarios.Options
	suite  int // scenarios in the suite
	// isolated gives each machine a Wine prefix of its own (default: the shared one).
	isolated bool
}

// runParallelCommand is lab run --parallel: machines as lab up boots them (from the lab
// file, if any), the suite spread over them, one merged report.
func runParallelCommand(ctx context.Context, cmd *cobra.Command, po parallelOptions) (*scenarios.Report, error) {
	var base upSettings
	if po.file != "" {
		lf, err := readLabFile(po.file)
		if err != nil {
			return nil, &usageError{err}
		}
		if err := applyLabFile(lf, pflag.NewFlagSet("none", pflag.ContinueOnError), &base); err != nil {
			return nil, &usageError{err}
		}
	}
	if po.isolated || cmd.Flags().Changed("isolated-windows") { // the flag wins over the file's isolated_windows
		base.isolatedWindows = po.isolated
	}
	if cmd.Flags().Changed("name") || base.cfg.Name == "" {
		base.cfg.Name = po.name
	}
	n := min(po.n, po.suite)
	if n < po.n {
		fmt.Fprintf(cmd.ErrOrStderr(), "lab: run: %d scenarios: booting %d machines, not %d\n", po.suite, n, po.n)
	}
	var mu sync.Mutex
	stderr := cmd.ErrOrStderr()
	progress := func(name string) io.Writer { return &prefixWriter{mu: &mu, w: stderr, prefix: "[" + name + "] "} }
	return runParallel(ctx, parallelNames(base.cfg.Name, n), parallelHooks{
		boot: func(ctx context.Context, name string) error {
			s := base
			s.cfg.Name = name
			m, err := upMachine(ctx, s, progress(name))
			if err != nil {
				return err
			}
			return m.Close()
		},
		run: func(ctx context.Context, name string, shard scenarios.ShardSpec) (*scenarios.Report, error) {
			m, err := machine.Open(name)
			if err != nil {
				return nil, err
			}
			defer m.Close()
			pw := progress(name)
			env, err := suite.EnvOf(ctx, m, suite.Options{Interpreter: po.interp, Progress: pw})
			if err != nil {
				return nil, err
			}
			opts := po.opts
			opts.Shard, opts.Progress = &shard, pw
			return scenarios.Run(ctx, env, opts)
		},
		down: func(name string) error {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
			defer cancel()
			return machine.Down(dctx, name, progress(name))
		},
	})
}
